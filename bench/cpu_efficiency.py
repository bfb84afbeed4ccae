"""CPU training efficiency: the train stage's model FLOP/s against this machine's fp32 matrix-multiply peak.

Each setting trains the default model (params.yaml's model.scratch, built by stages/modeling.py) on the default
training questions (bench/throughput.py: default_training_rows) with the train stage's Trainer and settings
(stages/train.py), in a process of its own with an empty inductor cache: compiling costs what it costs on a
fresh machine. The settings warm up one after another (--warmup optimizer steps, compiling among them, timed),
then take turns: each round every setting trains alone for --window seconds while the others are stopped
(SIGSTOP), in a rotating order, so a host whose speed drifts (a shared VM) slows every setting alike. Before
each window torch.mm's best fp32 rate at the model's shapes and at 2048^3 is measured: the peak the window is
compared with. FLOPs are counted by torch.utils.flop_counter, eagerly, on each timed batch itself.

    python bench/cpu_efficiency.py                          # every setting, ~25 min on 2 cores
    python bench/cpu_efficiency.py compile compile-sdpa     # some of them

Prints each setting's median and best window, then one JSON line. Goal (issue 32): the stages' setting at
>= 50% of the peak. `stage s` is what a setting would take for the default train stage's steps: its warm-up as
measured, then its median rate.
"""

import argparse
import json
import math
import os
import signal
import statistics
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


def model_shapes():
    """The (m, k, n) of the default model's feed-forward products at a mean training batch, and 2048^3."""
    sys.path.insert(0, str(ROOT / "bench"))
    import throughput
    from stages import params
    p = params.load(ROOT / "params.yaml")
    size = p["model"]["scratch"]
    rows = throughput.default_training_rows(throughput.bundled_tokenizer(size["vocab_size"]))
    tokens = p["train"]["batch_size"] * round(sum(len(r["input_ids"]) for r in rows) / len(rows))
    return [(tokens, size["d_model"], size["d_ff"]), (tokens, size["d_ff"], size["d_model"]), (2048, 2048, 2048)]


def matmul_peak(shapes, seconds=0.7):
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


def worker(name, warmup, stop_file):
    """Train with one setting: stop the process group after `warmup` steps (the parent resumes it in windows),
    train until `stop_file` exists, then print every step's end time and FLOPs as one JSON line."""
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

    def new_model():
        torch.manual_seed(p["seed"])
        return modeling.build_model(p["model"], tokenizer)

    class Trainer(train.QATrainer):
        batches = {}  # step: its inputs, to count their FLOPs

        def _build_accelerator_args(self, **kwargs):
            args = super()._build_accelerator_args(**kwargs)
            args["dynamo_plugin"].dynamic = setting.get("dynamic", True)
            return args

        def training_step(self, model, inputs, *args, **kwargs):
            if self.state.global_step >= warmup:
                self.batches[self.state.global_step + 1] = {key: value.clone() for key, value in inputs.items()}
            return super().training_step(model, inputs, *args, **kwargs)

    class Clock(TrainerCallback):
        ends = {}  # step: its end, on the clock the parent's windows use

        def on_step_end(self, args, state, control, **kwargs):
            self.ends[state.global_step] = time.monotonic()
            if state.global_step == warmup:
                os.killpg(0, signal.SIGSTOP)  # warm: wait for the first window
            control.should_training_stop = state.global_step > warmup and os.path.exists(stop_file)

    model = new_model()
    hp = {**p["train"], "compile": setting["compile"]}
    with tempfile.TemporaryDirectory() as workdir:
        args = train.training_arguments(hp, p["seed"], workdir, report_to="none", disable_tqdm=True,
                                        max_steps=10**6, **setting.get("args", {}))
        collate = DataCollatorForSeq2Seq(tokenizer, model=model, pad_to_multiple_of=setting.get("pad_to"))
        trainer = Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                          data_collator=collate, callbacks=[Clock()])
        if "attention" in setting:  # instead of the Trainer's choice
            model.set_attn_implementation(setting["attention"])
        start = time.monotonic()
        trainer.train()

    counting = new_model().train()
    counting.set_attn_implementation(model.config._attn_implementation)  # counted as it trained
    flops, by_shape = {}, {}
    for step, batch in Trainer.batches.items():
        batch = unpadded(batch)
        shape = tuple((key, tuple(value.shape)) for key, value in batch.items())
        if shape not in by_shape:  # the FLOPs depend on the shapes only
            with FlopCounterMode(display=False) as counter:
                counting(**batch).loss.backward()
            by_shape[shape] = counter.get_total_flops()
            counting.zero_grad(set_to_none=True)
        flops[step] = by_shape[shape]
    stage_steps = math.ceil(p["train"]["epochs"] * math.ceil(len(rows) / p["train"]["batch_size"]))
    print(json.dumps({"setting": name, "threads": torch.get_num_threads(), "warmup_s": Clock.ends[warmup] - start,
                      "stage_steps": stage_steps, "ends": Clock.ends, "flops": flops}))


def window_rate(ends, flops, opened, closed):
    """Steps/s and FLOP/s over the steps that began and ended inside the window [opened, closed]."""
    steps = [s for s in flops if ends.get(s - 1, -math.inf) >= opened and ends[s] <= closed]
    if len(steps) < 2:
        return None
    seconds = ends[max(steps)] - ends[min(steps) - 1]
    return len(steps) / seconds, sum(flops[s] for s in steps) / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", default=list(SETTINGS),
                        help=f"the settings to measure, of {', '.join(SETTINGS)} (default: all)")
    parser.add_argument("--warmup", type=int, default=30, help="optimizer steps before the windows (compiling)")
    parser.add_argument("--rounds", type=int, default=5, help="windows per setting")
    parser.add_argument("--window", type=float, default=20, help="seconds a setting trains per window")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.warmup, args.stop_file)
    for name in set(args.settings) - set(SETTINGS):
        parser.error(f"unknown setting {name}: choose from {', '.join(SETTINGS)}")

    shapes = model_shapes()  # imports stages before torch: this process's idle OpenMP threads must not spin
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        stop_file = os.path.join(scratch, "stop")
        workers, logs = {}, {}
        try:
            for name in args.settings:  # one at a time: compiling has the machine to itself
                cache = os.path.join(scratch, f"inductor-{name}")  # empty: compiling counts in full
                out, err = (open(os.path.join(scratch, f"{name}.{kind}"), "w+") for kind in ("out", "err"))
                workers[name] = subprocess.Popen(  # output to files: a full pipe would stall a worker
                    [sys.executable, __file__, "--worker", name, "--warmup", str(args.warmup), "--stop-file",
                     stop_file], cwd=ROOT, stdout=out, stderr=err, env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache},
                    start_new_session=True)
                logs[name] = out, err
                _, status = os.waitpid(workers[name].pid, os.WUNTRACED)
                if not os.WIFSTOPPED(status):
                    sys.exit(f"setting {name} failed:\n{Path(err.name).read_text()[-3000:]}")
                print(f"{name}: warm", file=sys.stderr, flush=True)
            windows = {name: [] for name in args.settings}  # (opened, closed, peak)
            for round_ in range(args.rounds):
                for i in range(len(args.settings)):
                    name = args.settings[(i + round_) % len(args.settings)]  # rotated: no setting always first
                    peak = matmul_peak(shapes)
                    opened = time.monotonic()
                    os.killpg(workers[name].pid, signal.SIGCONT)
                    time.sleep(args.window)
                    os.killpg(workers[name].pid, signal.SIGSTOP)
                    windows[name].append((opened, time.monotonic(), peak))
                print(f"round {round_ + 1} of {args.rounds}", file=sys.stderr, flush=True)
            Path(stop_file).touch()
            for run in workers.values():
                os.killpg(run.pid, signal.SIGCONT)
            for run in workers.values():
                run.wait()
            outputs = {name: (Path(out.name).read_text(), Path(err.name).read_text())
                       for name, (out, err) in logs.items()}
        finally:
            for run in workers.values():
                if run.poll() is None:
                    os.killpg(run.pid, signal.SIGKILL)
                    run.wait()
    results = []
    for name, run in workers.items():
        if run.returncode:
            sys.exit(f"setting {name} failed:\n{outputs[name][1][-3000:]}")
        out = json.loads(outputs[name][0].strip().splitlines()[-1])
        ends = {int(step): t for step, t in out["ends"].items()}
        flops = {int(step): f for step, f in out["flops"].items()}
        measured = []  # (steps/s, GFLOP/s, of peak, peak) of each window
        for opened, closed, peak in windows[name]:
            if timed := window_rate(ends, flops, opened, closed):
                measured.append((timed[0], timed[1] / 1e9, timed[1] / 1e9 / peak, peak))
        steps_per_s = [m[0] for m in measured]
        median_rate = statistics.median(steps_per_s)
        results.append({
            "setting": name, "threads": out["threads"], "warmup_s": round(out["warmup_s"], 1),
            "windows": len(measured), "gflop_per_step": round(sum(flops.values()) / len(flops) / 1e9, 2),
            "steps_per_s": round(median_rate, 2), "best_steps_per_s": round(max(steps_per_s), 2),
            "gflops": round(statistics.median(m[1] for m in measured), 1),
            "peak_gflops": round(statistics.median(m[3] for m in measured), 1),
            "of_peak": round(statistics.median(m[2] for m in measured), 3),
            "best_of_peak": round(max(m[2] for m in measured), 3),
            "stage_steps": out["stage_steps"],
            "stage_s": round(out["warmup_s"] + (out["stage_steps"] - args.warmup) / median_rate),
        })

    print(f"cores {os.cpu_count()}; torch {torch.__version__}; threads {results[0]['threads']}; {args.warmup} "
          f"warm-up steps, then {args.rounds} windows of {args.window:g} s a setting, taking turns; median (best)")
    print(f"{'setting':24}{'warm-up s':>10}{'steps/s':>16}{'GFLOP/step':>11}{'GFLOP/s':>9}{'peak':>7}"
          f"{'of peak':>14}{'stage s':>9}")
    for r in results:
        print(f"{r['setting']:24}{r['warmup_s']:10.1f}{r['steps_per_s']:9.2f} ({r['best_steps_per_s']:5.2f})"
              f"{r['gflop_per_step']:11.2f}{r['gflops']:9.1f}{r['peak_gflops']:7.0f}"
              f"{r['of_peak']:8.0%} ({r['best_of_peak']:3.0%}){r['stage_s']:9.0f}")
    print(json.dumps({"cores": os.cpu_count(), "torch": torch.__version__, "warmup": args.warmup,
                      "rounds": args.rounds, "window_s": args.window, "settings": results}))


if __name__ == "__main__":
    main()
