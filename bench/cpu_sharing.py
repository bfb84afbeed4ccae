"""CPU sharing: how fast one training runs alone, beside a second training, and beside a test run.

Each training is a separate process running the default training: the train stage's Trainer
settings (bench/throughput.py's project side, batch 32, compiled as train.compile does) on the bundled
default's model shape and training questions, tokenized as the tokenize stage does. It trains for
--seconds after --warmup seconds (counted from its fifth step: compiling is done by then) and reports
optimizer steps/s; the runs of one case start together, so they overlap throughout. The busy
neighbour of the last case is the README's fast test command, restarted until the training ends.

    python bench/cpu_sharing.py                          # the stages' setting
    GOMP_SPINCOUNT=300000 python bench/cpu_sharing.py    # libgomp's default, as before stages/__init__.py

Prints each case's rates and their share of the solo rate, then one JSON line. Goals (issue 21):
each of two trainings >= 40 % of solo, a training beside tests >= 25 %.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 5  # steps before the warm-up's seconds start (compiling, allocator, first batches)
OPENMP = ["GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS"]  # the settings reported


def worker(seconds, warmup):
    """One training process: steps/s over `seconds` after WARMUP steps and `warmup` seconds, printed as JSON."""
    sys.path.insert(0, str(ROOT / "bench"))
    import throughput  # imports stages before torch, as the stages do, so the OpenMP settings are theirs
    import torch
    from transformers import TrainerCallback
    from transformers.utils import logging

    class Clock(TrainerCallback):
        def __init__(self):
            self.warm = self.start = self.first = self.steps = self.seconds = None

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            if state.global_step == WARMUP:
                self.warm = now
            elif self.warm and not self.start and now - self.warm >= warmup:
                self.start, self.first = now, state.global_step
            elif self.start and now - self.start >= seconds:
                self.steps = state.global_step - self.first
                self.seconds = now - self.start
                control.should_training_stop = True

    logging.set_verbosity_error()
    tokenizer = throughput.bundled_tokenizer()
    rows = throughput.default_training_rows(tokenizer)
    model = throughput.modeling.tuned(throughput.new_model(throughput.SHAPES["quick"], "sdpa", 0))
    with tempfile.TemporaryDirectory() as workdir:
        trainer = throughput.project_trainer(model, rows, 32, 0, tokenizer, Path(workdir))
        clock = Clock()
        trainer.add_callback(clock)
        trainer.train()
    print(json.dumps({"steps_per_s": round(clock.steps / clock.seconds, 2), "threads": torch.get_num_threads(),
                      **{name.lower(): os.environ.get(name) for name in OPENMP}}))


def trainings(count, seconds, warmup, beside=None):
    """Rates of `count` trainings started together, with `beside` (a command) running meanwhile."""
    command = [sys.executable, __file__, "--worker", "--seconds", str(seconds), "--warmup", str(warmup)]
    neighbour = subprocess.Popen(f"while true; do {beside}; done", shell=True, cwd=ROOT, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if beside else None
    try:
        runs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(count)]
        outputs = [json.loads(run.communicate()[0].strip().splitlines()[-1]) for run in runs]
    finally:
        if neighbour:
            os.killpg(neighbour.pid, 9)
            neighbour.wait()
    return outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30, help="timed training per run")
    parser.add_argument("--warmup", type=float, default=30, help="seconds trained before the timing starts")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.seconds, args.warmup)

    tests = f"{sys.executable} -m pytest -q -m 'not slow' -p no:cacheprovider tests"
    solo, = trainings(1, args.seconds, args.warmup)  # also fills inductor's cache: the others compile from it
    pair = trainings(2, args.seconds, args.warmup)
    beside_tests, = trainings(1, args.seconds, args.warmup, beside=tests)
    rate = solo["steps_per_s"]
    shares = {"two_trainings": [round(r["steps_per_s"] / rate, 2) for r in pair],
              "beside_tests": round(beside_tests["steps_per_s"] / rate, 2)}
    settings = {name.lower(): solo[name.lower()] for name in OPENMP}
    print(f"cores {os.cpu_count()}; torch threads {solo['threads']}; in the trainings: {settings}")
    print(f"solo                 {rate:6.2f} steps/s")
    for r, share in zip(pair, shares["two_trainings"]):
        print(f"one of two at once   {r['steps_per_s']:6.2f} steps/s  {share:5.0%} of solo (goal >= 40%)")
    print(f"beside the tests     {beside_tests['steps_per_s']:6.2f} steps/s  {shares['beside_tests']:5.0%} of solo "
          "(goal >= 25%)")
    print(json.dumps({"cores": os.cpu_count(), "threads": solo["threads"], **settings,
                      "solo_steps_per_s": rate, "pair_steps_per_s": [r["steps_per_s"] for r in pair],
                      "beside_tests_steps_per_s": beside_tests["steps_per_s"], "shares": shares}))


if __name__ == "__main__":
    main()
