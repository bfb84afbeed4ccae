"""CPU training efficiency: the train stage's model FLOP/s against this machine's fp32 matrix-multiply peak.

Each setting trains the default model (params.yaml's model.scratch, built by stages/modeling.py) on the default
training questions (bench/throughput.py: default_training_rows) with the train stage's Trainer and settings
(stages/train.py), in a process of its own with an empty inductor cache: compiling costs what it costs on a
fresh machine. The first --warmup optimizer steps (compiling among them) are timed apart, then --steps steps.
FLOPs are counted by torch.utils.flop_counter, eagerly, on the timed batches themselves; the peak is torch.mm's
best fp32 rate at the model's shapes and at 2048^3, measured in each process before and after its training.

    python bench/cpu_efficiency.py                  # the stages' setting and every candidate, ~20 min on 2 cores
    python bench/cpu_efficiency.py eager compile    # some of them

Prints a table, then one JSON line. Goal (issue 32): the stages' setting at >= 50% of the peak. `stage s` is what
the settings would take for the default train stage's steps: the warm-up as measured, then the timed rate.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {  # name: train.compile, and what else differs from the train stage
    "eager": dict(compile=False),  # the stages before train.compile
    "compile": dict(compile=True),  # the stages now: one graph with dynamic shapes, T5's eager attention
                                    # (stages/train.py: QATrainer)
    "compile-sdpa": dict(compile=True, attention="sdpa"),  # SDPA's attention, as a GPU trains compiled
    "compile-per-shape": dict(compile=True, dynamic=None),  # transformers' default: a graph per shape until it
                                                            # marks the varying dimensions dynamic
    "compile-buckets-16": dict(compile=True, dynamic=False, pad_to=16),  # static graphs, lengths rounded up to 16
    "compile-foreach-adamw": dict(compile=True, args=dict(optim="adamw_torch")),  # AdamW's foreach kernels, not fused
    "compile-max-autotune": dict(compile=True, args=dict(torch_compile_mode="max-autotune-no-cudagraphs")),
                            # inductor picks each matrix product's kernel by timing its own C++ ones against oneDNN's
}


def matmul_peak(shapes, seconds=2.0):
    """Best fp32 GFLOP/s of torch.mm over these (m, k, n) shapes, each run for about `seconds`."""
    import torch
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        start, reps = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            a @ b
            reps += 1
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9)
    return best


def unpadded(batch):
    """The batch cut to its longest source and target: the model's FLOPs, whatever padding a setting adds."""
    source = int(batch["attention_mask"].sum(1).max())
    target = int((batch["labels"] != -100).sum(1).max())
    return {key: (value[:, :source] if key in ("input_ids", "attention_mask") else value[:, :target]).contiguous()
            for key, value in batch.items()}


def worker(name, warmup, steps):
    """Train with one setting; print its timings, FLOPs and the peak around them as one JSON line."""
    sys.path.insert(0, str(ROOT / "bench"))
    import throughput  # imports stages before torch, as the stages do (stages/__init__.py)
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import DataCollatorForSeq2Seq, TrainerCallback
    from transformers.utils import logging

    from stages import modeling, params, train

    setting = SETTINGS[name]
    logging.set_verbosity_error()
    p = params.load(ROOT / "params.yaml")
    tokenizer = throughput.bundled_tokenizer(p["model"]["scratch"]["vocab_size"])
    rows = throughput.default_training_rows(tokenizer)
    size = p["model"]["scratch"]
    tokens = p["train"]["batch_size"] * round(sum(len(r["input_ids"]) for r in rows) / len(rows))
    shapes = [(tokens, size["d_model"], size["d_ff"]), (tokens, size["d_ff"], size["d_model"]), (2048, 2048, 2048)]
    peak_before = matmul_peak(shapes)

    def new_model():
        torch.manual_seed(p["seed"])
        return modeling.build_model(p["model"], tokenizer)

    class Trainer(train.QATrainer):
        timed = []  # the inputs of the timed steps, to count their FLOPs

        def _build_accelerator_args(self, **kwargs):
            args = super()._build_accelerator_args(**kwargs)
            args["dynamo_plugin"].dynamic = setting.get("dynamic", True)
            return args

        def training_step(self, model, inputs, *args, **kwargs):
            if warmup <= self.state.global_step < warmup + steps:
                self.timed.append({key: value.clone() for key, value in inputs.items()})
            return super().training_step(model, inputs, *args, **kwargs)

    class Clock(TrainerCallback):
        ends = {}

        def on_step_end(self, args, state, control, **kwargs):
            self.ends[state.global_step] = time.perf_counter()

    model = new_model()
    hp = {**p["train"], "compile": setting["compile"]}
    overrides = setting.get("args", {})
    with tempfile.TemporaryDirectory() as workdir:
        args = train.training_arguments(hp, p["seed"], workdir, report_to="none", disable_tqdm=True,
                                        max_steps=warmup + steps, **overrides)
        collate = DataCollatorForSeq2Seq(tokenizer, model=model, pad_to_multiple_of=setting.get("pad_to"))
        trainer = Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                          data_collator=collate, callbacks=[Clock()])
        if "attention" in setting:  # instead of the Trainer's choice
            model.set_attn_implementation(setting["attention"])
        start = time.perf_counter()
        trainer.train()
    ends = Clock.ends
    peak_after = matmul_peak(shapes)

    flops = 0
    counting = new_model().train()
    counting.set_attn_implementation(model.config._attn_implementation)  # counted as it trained
    for batch in Trainer.timed:
        with FlopCounterMode(display=False) as counter:
            counting(**unpadded(batch)).loss.backward()
        flops += counter.get_total_flops()
        counting.zero_grad(set_to_none=True)
    seconds = ends[warmup + steps] - ends[warmup]
    stage_steps = math.ceil(p["train"]["epochs"] * math.ceil(len(rows) / p["train"]["batch_size"]))
    warmup_seconds = ends[warmup] - start
    print(json.dumps({
        "setting": name, "threads": torch.get_num_threads(), "warmup_s": round(warmup_seconds, 1),
        "steps_per_s": round(steps / seconds, 2), "gflop_per_step": round(flops / steps / 1e9, 2),
        "gflops": round(flops / seconds / 1e9, 1), "peak_gflops": round(max(peak_before, peak_after), 1),
        "peak_before_after": [round(peak_before, 1), round(peak_after, 1)],
        "of_peak": round(flops / seconds / 1e9 / max(peak_before, peak_after), 3),
        "stage_steps": stage_steps, "stage_s": round(warmup_seconds + (stage_steps - warmup) * seconds / steps),
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", default=list(SETTINGS),
                        help=f"the settings to measure, of {', '.join(SETTINGS)} (default: all)")
    parser.add_argument("--warmup", type=int, default=30, help="optimizer steps before the timing (compiling)")
    parser.add_argument("--steps", type=int, default=150, help="timed optimizer steps")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.warmup, args.steps)
    for name in set(args.settings) - set(SETTINGS):
        parser.error(f"unknown setting {name}: choose from {', '.join(SETTINGS)}")

    results = []
    for name in args.settings:
        with tempfile.TemporaryDirectory() as cache:  # inductor's cache empty: compiling counts in full
            run = subprocess.run([sys.executable, __file__, "--worker", name, "--warmup", str(args.warmup),
                                  "--steps", str(args.steps)], cwd=ROOT, capture_output=True, text=True,
                                 env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})
        if run.returncode:
            sys.exit(f"setting {name} failed:\n{run.stderr[-3000:]}")
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # progress, as each setting ends

    import torch
    print(f"cores {os.cpu_count()}; torch {torch.__version__}; threads {results[0]['threads']}; "
          f"{args.warmup} warm-up and {args.steps} timed steps a setting")
    print(f"{'setting':26}{'warm-up s':>10}{'steps/s':>9}{'GFLOP/step':>11}{'GFLOP/s':>9}{'peak':>7}"
          f"{'of peak':>9}{'stage s':>9}")
    for r in results:
        print(f"{r['setting']:26}{r['warmup_s']:10.1f}{r['steps_per_s']:9.2f}{r['gflop_per_step']:11.2f}"
              f"{r['gflops']:9.1f}{r['peak_gflops']:7.0f}{r['of_peak']:9.0%}{r['stage_s']:9.0f}")
    print(json.dumps({"cores": os.cpu_count(), "torch": torch.__version__, "warmup": args.warmup,
                      "steps": args.steps, "settings": results}))


if __name__ == "__main__":
    main()
