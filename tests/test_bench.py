"""bench/throughput.py runs both sides and ends with one JSON line (its numbers are not judged here); its
candidates learn what the stages learn."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

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


def load_bench():
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "bench/throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_compiled_regions_train_like_eager_and_can_be_undone():
    bench = load_bench()
    shape = dict(vocab_size=64, d_model=16, d_ff=32, num_layers=1, num_heads=2, feed_forward_proj="gated-gelu")
    batches = [(torch.randint(3, 64, (b, n)), torch.randint(3, 64, (b, t))) for b, n, t in ((4, 9, 3), (3, 17, 5))]

    def losses(model):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        result = []
        for ids, labels in batches * 2:
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            result.append(loss.item())
        return result

    eager = losses(bench.new_model(shape, "sdpa", 0))
    model = bench.new_model(shape, "sdpa", 0)
    torch._dynamo.reset()  # compiles afresh; the counters below are kept by reset(), so cleared too
    counters.clear()
    regions = bench.compile_regions(model)
    assert len(regions) == 2 + 3 + 2  # feed-forward layers, attention layer norms, final layer norms
    assert losses(model) == pytest.approx(eager, rel=1e-5)
    assert counters["stats"]["unique_graphs"] >= 2  # compiled, not run eagerly: a feed-forward and a norm graph
    for module in regions:
        del module.forward
    assert all(not hasattr(module.forward, "_torchdynamo_orig_callable") for module in regions)


def test_deferred_stop_checks_reach_cuda_only(monkeypatch):
    bench = load_bench()
    checks = bench.generation_utils.DeferredStopCheck
    monkeypatch.setattr(checks, "is_supported", checks.is_supported)  # restored after the test
    assert not checks.is_supported(torch.device("cuda"), None, False, is_assistant=False)
    bench.defer_stop_checks()
    assert checks.is_supported(torch.device("cuda"), None, False, is_assistant=False)
    assert not checks.is_supported(torch.device("cuda"), None, False, is_assistant=True)
    assert not checks.is_supported(torch.device("cpu"), None, False, is_assistant=False)
