"""bench/throughput.py runs both sides and ends with one JSON line (its numbers are not judged here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_prints_both_sides_and_a_json_summary():
    run = subprocess.run([sys.executable, "bench/throughput.py", "--quick", "--steps", "2", "--generate", "16"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    for side in ("train_seed", "train_project", "generate_seed", "generate_project"):
        assert summary[side]["examples_per_s"] > 0 and summary[side]["tokens_per_s"] > 0
    ratio = summary["train_project"]["examples_per_s"] / summary["train_seed"]["examples_per_s"]
    assert summary["train_speedup"] == pytest.approx(ratio, rel=0.05)  # from unrounded speeds
    assert summary["generate_speedup"] > 0 and summary["device"] == "CPU"
