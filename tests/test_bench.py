"""bench/throughput.py runs both sides and ends with one JSON line (its numbers are not judged here); its
compiled regions learn what the stages learn, and it counts packed batches as padded ones;
bench/cpu_sharing.py's trainings run with the stages' OpenMP setting; bench/cpu_efficiency.py
counts the training's FLOPs against the matmul peak it measures."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters
from transformers import DataCollatorForSeq2Seq

from stages import packing, vocabulary
from tests.conftest import training_losses

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_prints_both_sides_and_a_json_summary():
    run = subprocess.run([sys.executable, "bench/throughput.py", "--quick", "--steps", "1", "--generate", "8",
                          "--candidate", "eager"], cwd=ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    for side in ("train_seed", "train_project", "generate_seed", "generate_project", "train_eager"):
        assert summary[side]["examples_per_s"] > 0 and summary[side]["tokens_per_s"] > 0
    ratio = summary["train_project"]["examples_per_s"] / summary["train_seed"]["examples_per_s"]
    assert summary["train_speedup"] == pytest.approx(ratio, rel=0.05)  # from unrounded speeds
    assert summary["generate_speedup"] > 0 and summary["device"] == "CPU"
    assert summary["train_speedup_eager"] > 0 and "generate_eager" not in summary  # a training candidate


def load_bench():
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "bench/throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


SHAPE = dict(vocab_size=64, d_model=16, d_ff=32, num_layers=2, num_heads=2, feed_forward_proj="gated-gelu")


def test_compiled_regions_train_like_eager():
    bench = load_bench()
    eager = training_losses(bench.new_model(SHAPE, "sdpa", 0))
    model = bench.new_model(SHAPE, "sdpa", 0)
    torch._dynamo.reset()  # compiles afresh; the counters below are kept by reset(), so cleared too
    counters.clear()
    bench.compile_regions(model)
    compiled = [module for module in model.modules() if "forward" in module.__dict__]
    assert len(compiled) == 4 + 6 + 2  # feed-forward layers, attention layer norms, final layer norms
    assert training_losses(model) == pytest.approx(eager, rel=1e-5)
    assert counters["stats"]["unique_graphs"] >= 2  # compiled, not run eagerly: a feed-forward and a norm graph


def test_packed_batches_count_the_examples_tokens_and_flops_of_the_same_batch_padded():
    bench = load_bench()
    sources = [[5] * n + [1] for n in (30, 7, 12, 50, 3)]
    targets = [[6] * n + [1] for n in (2, 0, 5, 1, 3)]
    rows = packing.PackedRows(sources, targets, *packing.row_lengths(sources, targets))
    assert len(rows) < len(sources)  # rows hold several examples
    packed = bench.example_lengths(packing.collate([rows[r] for r in range(len(rows))]))
    padded = bench.example_lengths(DataCollatorForSeq2Seq(vocabulary.train_tokenizer(["pad"], 100))(
        [{"input_ids": s, "labels": t} for s, t in zip(sources, targets)]))
    for counted, real in zip(packed, padded):
        assert sorted(counted[counted > 0].tolist()) == sorted(real.tolist())
    model = bench.new_model(SHAPE, "sdpa", 0)
    assert bench.training_flops(model, *packed) == bench.training_flops(model, *padded)


@pytest.mark.slow
def test_the_cpu_sharing_worker_trains_with_the_stages_openmp_setting():
    run = subprocess.run([sys.executable, "bench/cpu_sharing.py", "--worker", "--seconds", "1", "--warmup", "1"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["steps_per_s"] > 0 and result["gomp_spincount"] == "3000"


@pytest.mark.slow
def test_the_packing_check_compares_packed_and_padded_gradients():
    run = subprocess.run([sys.executable, "bench/packing_check.py", "--quick", "--examples", "8"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    fp32 = json.loads(run.stdout.strip().splitlines()[-1])["fp32"]
    assert fp32["packed_loss"] == pytest.approx(fp32["padded_loss"], rel=1e-6)
    assert 0 < fp32["largest_gradient_difference"] < 1e-4 and not fp32["nan"]


@pytest.mark.slow
def test_the_cpu_efficiency_benchmark_counts_flops_against_the_peak_it_measures():
    run = subprocess.run([sys.executable, "bench/cpu_efficiency.py", "eager", "compile-sdpa", "--warmup", "2",
                          "--rounds", "2", "--window", "3"], cwd=ROOT, capture_output=True, text=True, check=True)
    results = json.loads(run.stdout.strip().splitlines()[-1])["settings"]
    assert [r["setting"] for r in results] == ["eager", "compile-sdpa"]
    for result in results:
        assert result["windows"] == 2 and result["gflop_per_step"] > 1  # the default model: ~7 GFLOP a step
        assert 0 < result["of_peak"] <= result["best_of_peak"] < 1
        assert result["steps_per_s"] <= result["best_steps_per_s"] and result["stage_steps"] > 1000


def test_a_window_counts_only_the_steps_that_ran_inside_it():
    spec = importlib.util.spec_from_file_location("cpu_efficiency", ROOT / "bench/cpu_efficiency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ends = {10: 0.5, 11: 1.5, 12: 2.0, 13: 2.5, 14: 4.0}  # stopped between steps 13 and 14
    flops = {11: 1e9, 12: 2e9, 13: 3e9, 14: 4e9}
    steps_per_s, flop_per_s = bench.window_rate(ends, flops, opened=1.0, closed=3.0)
    assert steps_per_s == pytest.approx(2 / 1.0) and flop_per_s == pytest.approx(5e9 / 1.0)  # steps 12 and 13
    assert bench.window_rate(ends, flops, opened=1.0, closed=2.2) is None  # one step is no rate
