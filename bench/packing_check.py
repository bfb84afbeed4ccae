"""Packed training (train.packing) against the same examples padded, where it runs: on the GPU's compiled
FlexAttention kernels. One batch's loss and every gradient, in fp32 and under bf16 autocast, of a
randomly initialised model of t5-small's shape, on the benchmark's SQuAD-like examples (bench/throughput.py).

    python bench/packing_check.py           # on the GPU (bash bench/gpu.sh runs it first)
    python bench/packing_check.py --quick   # a small T5 on the CPU: FlexAttention's reference code

Prints the loss of each, the largest relative difference of a gradient (|packed - padded| / |padded|, by
tensor) and whether any gradient is NaN, then one JSON line; exits 1 on a NaN or an fp32 difference over
1e-3. On the CPU, PyTorch's check that refuses FlexAttention's backward there is lifted, as
tests/test_packing.py does, to run its reference code.
"""

import argparse
import json
import random
import sys
import warnings

import throughput  # bench/throughput.py: model shapes and examples (this script's folder is on the path)

import torch
import torch.nn.attention.flex_attention

from stages import modeling, packing

TOLERANCE = 1e-3  # fp32: the two paths differ only in the order of sums


def loss_and_gradients(model, batch, autocast):
    model.zero_grad()
    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    loss.backward()
    return loss.item(), {name: p.grad.float().clone() for name, p in model.named_parameters() if p.grad is not None}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small T5 on the CPU")
    parser.add_argument("--examples", type=int, help="examples in the batch (256 on the GPU, 32 with --quick)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.quick
    if not cuda:
        torch.nn.attention.flex_attention._validate_device = lambda *tensors: None
        warnings.filterwarnings("ignore", "flex_attention called without torch.compile")  # as it is meant to be
    device = torch.device("cuda" if cuda else "cpu")
    shape = throughput.SHAPES["quick" if args.quick else "t5-small"]
    rows = throughput.examples(args.examples or (256 if cuda else 32), 4000, random.Random(0))
    sources, targets = [r["input_ids"] for r in rows], [r["labels"] for r in rows]
    packed_rows = packing.PackedRows(sources, targets, *packing.row_lengths(sources, targets))
    packed = {k: v.to(device) for k, v in packing.collate([packed_rows[r] for r in range(len(packed_rows))]).items()}
    padded = {k: torch.tensor([r[k] for r in throughput.padded(rows)], device=device)
              for k in ("input_ids", "attention_mask", "labels")}
    model = packing.enable(modeling.tuned(throughput.new_model(shape, "sdpa", 0)))
    print(f"{len(rows)} examples in {len(packed_rows)} rows of {packed_rows.source_length} + "
          f"{packed_rows.target_length} tokens; {device}, torch {torch.__version__}")

    results, failed = {}, False
    for autocast in [False] + ([True] if modeling.bf16_supported() and cuda else []):
        (packed_loss, packed_grads), (padded_loss, padded_grads) = (loss_and_gradients(model, batch, autocast)
                                                                    for batch in (packed, padded))
        worst_name, worst = max(((name, ((packed_grads[name] - g).norm() / g.norm()).item())
                                 for name, g in padded_grads.items() if g.norm() > 0), key=lambda pair: pair[1])
        nan = any(g.isnan().any().item() for g in packed_grads.values())
        label = "bf16 autocast" if autocast else "fp32"
        results[label] = {"packed_loss": packed_loss, "padded_loss": padded_loss,
                          "largest_gradient_difference": worst, "in": worst_name, "nan": nan}
        print(f"{label}: loss {packed_loss:.6f} packed, {padded_loss:.6f} padded; largest gradient difference "
              f"{worst:.2e} ({worst_name}); NaN: {nan}")
        failed |= nan or (not autocast and worst > TOLERANCE)
    print(json.dumps(results))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
