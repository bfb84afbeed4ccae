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
    both = "shared-mask+defer-stop"
    run = subprocess.run([sys.executable, "bench/throughput.py", "--quick", "--steps", "2", "--generate", "16",
                          "--candidate", both], cwd=ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    for side in ("train_seed", "train_project", "generate_seed", "generate_project", f"train_{both}",
                 f"generate_{both}"):
        assert summary[side]["examples_per_s"] > 0 and summary[side]["tokens_per_s"] > 0
    ratio = summary["train_project"]["examples_per_s"] / summary["train_seed"]["examples_per_s"]
    assert summary["train_speedup"] == pytest.approx(ratio, rel=0.05)  # from unrounded speeds
    assert summary["generate_speedup"] > 0 and summary["device"] == "CPU"
    assert summary[f"train_speedup_{both}"] > 0 and summary[f"generate_speedup_{both}"] > 0


def test_unknown_candidate_is_refused_with_the_known_ones():
    run = subprocess.run([sys.executable, "bench/throughput.py", "--quick", "--candidate", "compile+fast"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "unknown candidate 'fast': one of compile, bf16-ff" in run.stderr


def load_bench():
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "bench/throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


SHAPE = dict(vocab_size=64, d_model=16, d_ff=32, num_layers=2, num_heads=2, feed_forward_proj="gated-gelu")
BATCHES = [(torch.randint(3, 64, (b, n)), torch.randint(3, 64, (b, t))) for b, n, t in ((4, 9, 3), (3, 17, 5))]


def losses(model, autocast=False):
    """Losses of four AdamW steps on BATCHES, the second and fourth inputs padded (a real padding mask)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    result = []
    for ids, labels in BATCHES * 2:
        mask = torch.ones_like(ids)
        mask[1:, ids.shape[1] // 2:] = 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids * mask, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        result.append(loss.item())
    return result


def overridden(model):
    return [module for module in model.modules() if "forward" in module.__dict__]


def test_compiled_regions_train_like_eager_and_can_be_undone():
    bench = load_bench()
    eager = losses(bench.new_model(SHAPE, "sdpa", 0))
    model = bench.new_model(SHAPE, "sdpa", 0)
    torch._dynamo.reset()  # compiles afresh; the counters below are kept by reset(), so cleared too
    counters.clear()
    undo = bench.compile_regions(model)
    assert len(overridden(model)) == 4 + 6 + 2  # feed-forward layers, attention layer norms, final layer norms
    assert losses(model) == pytest.approx(eager, rel=1e-5)
    assert counters["stats"]["unique_graphs"] >= 2  # compiled, not run eagerly: a feed-forward and a norm graph
    undo()
    assert overridden(model) == []


@pytest.mark.parametrize("activation", ["relu", "gated-gelu"])  # t5-small's and T5 v1.1's feed-forward layers
def test_bf16_feed_forward_skips_the_fp32_round_trip_and_trains_bit_for_bit_alike(activation):
    bench = load_bench()
    shape = {**SHAPE, "feed_forward_proj": activation}
    plain = losses(bench.new_model(shape, "sdpa", 0), autocast=True)
    model = bench.new_model(shape, "sdpa", 0)
    seen = []
    for layer in model.modules():
        if hasattr(layer, "wo"):
            layer.wo.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    undo = bench.skip_fp32_round_trip(model)
    assert losses(model, autocast=True) == plain  # equal, not close: the casts it skips change no bit
    assert set(seen) == {torch.bfloat16}
    seen.clear()
    losses(model)  # without autocast the layers run as transformers wrote them
    assert set(seen) == {torch.float32}
    undo()
    assert overridden(model) == []
    seen.clear()
    losses(model, autocast=True)
    assert set(seen) == {torch.float32}  # transformers' own round trip again


def test_shared_bias_masks_are_merged_once_per_stack_and_train_alike(monkeypatch):
    bench = load_bench()
    plain = losses(bench.new_model(SHAPE, "sdpa", 0))
    merges = []
    merge = bench.sdpa_attention.create_position_bias_mask
    monkeypatch.setattr(bench.sdpa_attention, "create_position_bias_mask",  # counted, and restored after the test
                        lambda *args: merges.append(args[0].shape) or merge(*args))
    undo = bench.share_bias_masks(None)
    assert losses(bench.new_model(SHAPE, "sdpa", 0)) == pytest.approx(plain, rel=1e-6)
    assert len(merges) == 4 * 3  # per step: encoder, decoder self-attention, cross-attention; not per layer too
    undo()
    merges.clear()
    losses(bench.new_model(SHAPE, "sdpa", 0))
    assert len(merges) == 4 * 3 * SHAPE["num_layers"]


def test_deferred_stop_checks_reach_cuda_only_and_can_be_undone():
    bench = load_bench()
    checks = bench.generation_utils.DeferredStopCheck
    assert not checks.is_supported(torch.device("cuda"), None, False, is_assistant=False)
    undo = bench.defer_stop_checks(None)
    try:
        assert checks.is_supported(torch.device("cuda"), None, False, is_assistant=False)
        assert not checks.is_supported(torch.device("cuda"), None, False, is_assistant=True)
        assert not checks.is_supported(torch.device("cpu"), None, False, is_assistant=False)
    finally:
        undo()
    assert not checks.is_supported(torch.device("cuda"), None, False, is_assistant=False)
