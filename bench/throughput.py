"""Training and generation speed: this project's path against the seed notebook's setup, side by side.

Both run in one process on the same random token data (SQuAD-like lengths: sources ~185 tokens, answers ~6)
and the same model shape. The seed's setup: fp32, eager attention, inputs padded to 512 and targets to 32,
training batch 16 with unfused AdamW, generation in batches of 32 of padded inputs. This project's: the
train stage's Trainer settings (stages/train.py) and the evaluate stage's generation (stages/decoding.py).

    python bench/throughput.py --quick   # a small T5 on the CPU, under 2 minutes
    python bench/throughput.py           # t5-small's shape on the GPU (or the CPU) that is here

Prints a table, then one JSON line with train_speedup and generate_speedup (project / seed, examples/s).
--candidate also trains, after this project's path, with a change to it (CANDIDATES; bench/README.md, "Candidate"),
on a fresh model with the same weights;
--profile prints where this project's side spends its time.
"""

import argparse
import gc
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

if "--quick" in sys.argv:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU measurement, on a GPU machine too (before torch loads)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
import stages  # noqa: F401  before torch, as in the stages: its OpenMP setting (stages/__init__.py)

import torch
import transformers
from transformers import (DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, T5Config,
                          T5ForConditionalGeneration, TrainerCallback)
from transformers.models.t5.modeling_t5 import T5LayerFF, T5LayerNorm
from transformers.utils import logging

from stages import decoding, modeling, packing, squad, train, vocabulary

SHAPES = {  # t5-small's published config; quick is the bundled default's size
    "t5-small": dict(vocab_size=32128, d_model=512, d_ff=2048, num_layers=6, num_heads=8, feed_forward_proj="relu"),
    "quick": dict(vocab_size=4000, d_model=128, d_ff=512, num_layers=2, num_heads=8, feed_forward_proj="gated-gelu"),
}
SEED_SOURCE, SEED_TARGET = 512, 32  # the seed pads every example to these lengths
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}  # dense tensor-core FLOP/s


def bundled_tokenizer(vocab_size=4000):
    """The tokenize stage's default tokenizer, trained on the bundled data, as the stages pad with it."""
    rows, _, _ = squad.load_split(ROOT / "data/raw", "train")
    return vocabulary.train_tokenizer([squad.model_input(q, c) for q, c in zip(rows["question"], rows["context"])],
                                      vocab_size)


def default_training_rows(tokenizer):
    """The default training questions (params.yaml's data.splits.train of data/raw), tokenized as the tokenize
    stage does: question and context as one input, the first answer as the target (the bundled contexts fit
    in one window)."""
    data, _, _ = squad.load_split(ROOT / "data/raw", "train[:20000]")
    sources = tokenizer([squad.model_input(q, c) for q, c in zip(data["question"], data["context"])])
    targets = tokenizer(text_target=[answers["text"][0] for answers in data["answers"]])
    return [{"input_ids": s, "labels": t} for s, t in zip(sources["input_ids"], targets["input_ids"])]


def examples(n, vocab_size, rng):
    """Random token ids (< vocab_size) with SQuAD-like lengths (question + context ~185 tokens, answer ~6),
    each ending in </s>."""
    rows = []
    for _ in range(n):
        source = min(SEED_SOURCE, max(40, int(rng.gauss(185, 70))))
        target = min(SEED_TARGET, max(2, int(rng.expovariate(1 / 5)) + 2))
        rows.append({"input_ids": [rng.randrange(3, vocab_size) for _ in range(source - 1)] + [1],
                     "labels": [rng.randrange(3, vocab_size) for _ in range(target - 1)] + [1]})
    return rows


def as_windows(rows):
    """The rows as decoding.generate reads windows: every token but </s> one character of its context."""
    windows = [(r["input_ids"], [(i, i + 1) for i in range(len(r["input_ids"]) - 1)] + [(-1, -1)]) for r in rows]
    return windows, ["x" * len(r["input_ids"]) for r in rows]


def padded(rows):
    """The seed's tokenization: every source padded to 512 and target to 32 (labels with -100)."""
    return [{"input_ids": r["input_ids"] + [0] * (SEED_SOURCE - len(r["input_ids"])),
             "attention_mask": [1] * len(r["input_ids"]) + [0] * (SEED_SOURCE - len(r["input_ids"])),
             "labels": r["labels"] + [-100] * (SEED_TARGET - len(r["labels"]))} for r in rows]


def new_model(shape, attention, seed):
    torch.manual_seed(seed)
    config = T5Config(**shape, d_kv=shape["d_model"] // shape["num_heads"], dropout_rate=0.0, pad_token_id=0,
                      eos_token_id=1, decoder_start_token_id=0, attn_implementation=attention)
    return T5ForConditionalGeneration(config).to(modeling.device())


def timed(trainer_class):
    """The trainer class, counting what it trains on: examples, real (unpadded) tokens and model FLOPs.
    Token-budget batches vary in size, so speed is counted batch by batch, on the batch's device: the
    counts are read only when the stopwatch stops, so counting never waits for the GPU."""
    class Timed(trainer_class):
        counts = torch.zeros(3, dtype=torch.float64)

        def training_step(self, model, inputs, *args, **kwargs):
            source, target = example_lengths(inputs)
            step = torch.stack([(source > 0).sum().double(), source.sum() + target.sum(),
                                training_flops(self.model, source, target)])
            self.counts = self.counts.to(step.device) + step
            return super().training_step(model, inputs, *args, **kwargs)
    return Timed


def example_lengths(inputs):
    """Real source and target tokens of each example in a batch, padded or packed (stages/packing.py: then
    one entry per row and segment, 0 where a row has fewer examples), without waiting for the GPU."""
    if "source_segments" not in inputs:
        return inputs["attention_mask"].sum(1).double(), (inputs["labels"] != -100).sum(1).double()
    width = inputs["target_segments"].shape[1]  # a row holds at most this many examples: each has a target

    def per_segment(segments):
        index = segments.masked_fill(segments == packing.PAD_SEGMENT, width)  # padding counted apart, dropped
        ones = torch.ones(index.shape, dtype=torch.float64, device=index.device)
        counts = torch.zeros(len(segments), width + 1, dtype=torch.float64, device=index.device)
        return counts.scatter_add_(1, index, ones)[:, :width].flatten()
    return per_segment(inputs["source_segments"]), per_segment(inputs["target_segments"])


class Stopwatch(TrainerCallback):
    """Times optimizer steps after `warmup` of them (kernel selection, allocator), then stops training."""

    def __init__(self, trainer, warmup, steps):
        self.trainer, self.warmup, self.steps = trainer, warmup, steps
        self.start = self.seconds = self.counts = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in (self.warmup, self.warmup + self.steps):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if state.global_step == self.warmup:
                self.start, self.counts = time.perf_counter(), self.trainer.counts.clone()
            else:
                self.seconds = time.perf_counter() - self.start
                self.counts = self.trainer.counts - self.counts
                control.should_training_stop = True


def time_training(trainer, warmup, steps, peak_flops):
    """examples/s, tokens/s, peak memory and, with the GPU's peak FLOP/s, model FLOPs utilisation."""
    watch = Stopwatch(trainer, warmup, steps)
    trainer.add_callback(watch)
    reset_peak_memory()
    trainer.train()
    examples, tokens, flops = (float(x) / watch.seconds for x in watch.counts)
    return {"examples_per_s": round(examples, 1), "tokens_per_s": round(tokens), "peak_memory_gib": peak_memory(),
            **({"mfu": round(flops / peak_flops, 4)} if peak_flops else {})}


def seed_trainer(model, rows, batch_size, workdir):
    args = Seq2SeqTrainingArguments(output_dir=str(workdir / "seed"), per_device_train_batch_size=batch_size,
                                    learning_rate=3e-4, num_train_epochs=1, optim="adamw_torch", report_to="none",
                                    save_strategy="no", disable_tqdm=True, seed=0)
    return timed(Seq2SeqTrainer)(model=model, args=args, train_dataset=padded(rows))


def project_trainer(model, rows, batch_size, batch_tokens, tokenizer, workdir, packing=False, compile=True):
    hp = dict(lr=3e-4, epochs=1, batch_size=batch_size, warmup_steps=0, weight_decay=0.0, compile=compile)
    args = train.training_arguments(hp, 0, workdir / "project", report_to="none", disable_tqdm=True)
    return timed(train.QATrainer)(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                                  data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
                                  batch_tokens=batch_tokens, packing=packing)


@torch.inference_mode()
def seed_generate(model, rows, batch_size, new_tokens):
    model.eval()
    inputs = padded(rows)
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        ids = torch.tensor([r["input_ids"] for r in batch], device=model.device)
        mask = torch.tensor([r["attention_mask"] for r in batch], device=model.device)
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, num_beams=1, do_sample=False)


def time_generation(generate, model, rows, new_tokens):
    # random weights rarely say </s>: both sides generate exactly new_tokens per example
    model.generation_config.min_new_tokens = new_tokens
    reset_peak_memory()
    start = time.perf_counter()
    generate(model, rows)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    speed = len(rows) / (time.perf_counter() - start)
    return {"examples_per_s": round(speed, 1), "tokens_per_s": round(speed * new_tokens),
            "peak_memory_gib": peak_memory()}


def reset_peak_memory():
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory():
    """Peak GPU memory allocated (GiB); on CPU the process's peak resident memory so far."""
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


# Candidates: this project's training changed, each measured with --candidate NAME: not in the stages' defaults
# yet, or (eager) taken out of them. Each changes the model and returns what else the trainer takes.

def compile_regions(model, dynamic=True):
    """Training: compile each feed-forward layer and each other layer norm, so their element-wise work
    (RMS norms, activations, residual additions) runs fused. With dynamic shapes on the CPU each kind of
    region compiled twice (encoder- and decoder-sized inputs), then served every layer and batch shape;
    on an H100 it kept compiling for new batch shapes (bench/README.md)."""
    in_ff = {id(m.layer_norm) for m in model.modules() if isinstance(m, T5LayerFF)}
    regions = [m for m in model.modules()
               if isinstance(m, T5LayerFF) or (isinstance(m, T5LayerNorm) and id(m) not in in_ff)]
    for module in regions:
        module.forward = torch.compile(module.forward, dynamic=dynamic)
    return {}


def eager(model):
    """train.compile: false: the model run as written, no compiling."""
    return {"compile": False}


def eager_attention(model):
    """Compiled with T5's own attention code, as a CPU trains it (stages/train.py: QATrainer), instead of
    SDPA's kernels, which a GPU keeps."""
    model.set_attn_implementation("eager")
    return {}


def pack(model):
    """train.packing: rows of several examples, --batch-tokens source tokens of them a batch (which the
    stages run without train.compile: it compiles its attention kernel itself)."""
    packing.enable(model)
    return {"packing": True, "compile": False}


def pack_and_compile(model):
    """Both: packed batches all have one shape, so each region compiles once per stack, for static shapes."""
    compile_regions(model, dynamic=False)
    return pack(model)


CANDIDATES = {"eager": eager, "eager-attention": eager_attention, "pack": pack, "pack-compile": pack_and_compile}
PACKED = ("pack", "pack-compile")  # the candidates that train packed rows: on a GPU, with --batch-tokens


def profiled(run, gpu, title):
    """run(), then the profiler's 20 operations that took the most device (GPU) or CPU time."""
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if gpu else [])
    with torch.profiler.profile(activities=activities) as profiler:
        result = run()
    print(f"profile: {title}")
    print(profiler.key_averages().table(sort_by="self_device_time_total" if gpu else "self_cpu_time_total",
                                        row_limit=20))
    return result


def training_flops(model, source, target):
    """Forward + backward FLOPs of a batch with these real source and target lengths (one per example):
    6 per weight per token it touches, plus the attention scores and their use (3 x 2 x 2 per pair)."""
    cfg = model.config
    encoder = sum(p.numel() for p in model.encoder.block.parameters())
    decoder = sum(p.numel() for p in model.decoder.block.parameters()) + cfg.d_model * cfg.vocab_size  # + LM head
    pairs = cfg.num_layers * (source**2).sum() + cfg.num_decoder_layers * (target**2 + target * source).sum()
    return 6 * (encoder * source.sum() + decoder * target.sum()) + 12 * cfg.num_heads * cfg.d_kv * pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small T5 on the CPU, under 2 minutes")
    parser.add_argument("--steps", type=int, help="timed training steps per side")
    parser.add_argument("--batch-size", type=int, help="this project's training batch (the seed's is 16)")
    parser.add_argument("--batch-tokens", type=int, default=0,
                        help="token budget per training batch (train.batch_tokens)")
    parser.add_argument("--eval-batch-size", type=int, help="this project's generation batch (the seed's is 32)")
    parser.add_argument("--generate", type=int, help="questions to answer per side")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--candidate", choices=CANDIDATES, action="append", default=[],
                        help="also train with this change not in the stages' defaults yet (bench/README.md); "
                             "repeatable")
    parser.add_argument("--profile", action="store_true",
                        help="print this project's top operations (its timings then include the profiler's cost)")
    args = parser.parse_args()
    for name in set(PACKED) & set(args.candidate):
        if not torch.cuda.is_available():
            parser.error(f"--candidate {name} trains on a GPU only (FlexAttention has no backward on the CPU)")
        if not args.batch_tokens:
            parser.error(f"--candidate {name} needs --batch-tokens")
    gpu = torch.cuda.is_available()
    shape = SHAPES["quick" if args.quick else "t5-small"]
    steps = args.steps or (30 if gpu else 8)
    batch_size = args.batch_size or (256 if gpu else 32)
    eval_batch_size = args.eval_batch_size or (256 if gpu else 64)
    n_generate = args.generate or (2048 if gpu else 256)
    warmup = 3

    def measure(run, title):
        return profiled(run, gpu, title) if args.profile else run()

    logging.set_verbosity_error()

    rng = random.Random(0)
    tokenizer = bundled_tokenizer()  # its 4,000 ids are a subset of either shape's vocabulary
    per_batch = max(16, batch_size, args.batch_tokens // 150)  # packed: ~1 example per 185 tokens, and a margin
    rows = examples(per_batch * (steps + warmup + 1), len(tokenizer), rng)
    test = examples(n_generate, len(tokenizer), rng)
    source = sum(len(r["input_ids"]) for r in rows) / len(rows)
    target = sum(len(r["labels"]) for r in rows) / len(rows)

    device = torch.cuda.get_device_name() if gpu else "CPU"
    peak = next((flops for name, flops in PEAK_BF16.items() if name in device), None) if gpu else None
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        model = new_model(shape, "eager", 0)  # the seed's transformers 4 ran T5 with eager attention
        results["train_seed"] = time_training(seed_trainer(model, rows, 16, workdir), warmup, steps, peak)
        results["generate_seed"] = time_generation(
            lambda m, r: seed_generate(m, r, 32, args.new_tokens), model, test, args.new_tokens)
        del model

        for label in ["project"] + args.candidate:
            model = modeling.tuned(new_model(shape, "sdpa", 0))  # as the stages run it; the same weights
            params = model.num_parameters()
            extra = CANDIDATES[label](model) if label in CANDIDATES else {}
            trainer = project_trainer(model, rows, batch_size, args.batch_tokens, tokenizer, workdir / label, **extra)
            results[f"train_{label}"] = measure(lambda: time_training(trainer, warmup, steps, peak),
                                                f"{label}: training")
            if label == "project":  # the candidates change training only
                if modeling.bf16_supported():
                    model = model.to(torch.bfloat16)  # as modeling.load_trained does for the evaluate stage
                results["generate_project"] = measure(lambda: time_generation(
                    lambda m, r: decoding.generate(m, tokenizer, *as_windows(r), eval_batch_size, args.new_tokens,
                                                   extractive=True), model, test, args.new_tokens),
                    "project: generation")
            del trainer, model  # the next variant's peak memory is its own
            gc.collect()
            if gpu:
                torch.cuda.empty_cache()

    settings = dict(batch_size=batch_size, batch_tokens=args.batch_tokens, eval_batch_size=eval_batch_size,
                    profile=args.profile)
    print(f"device: {device}; torch {torch.__version__}; transformers {transformers.__version__}; shape "
          f"{'quick' if args.quick else 't5-small'} ({params / 1e6:.1f}M parameters); sources {source:.0f} "
          f"tokens, targets {target:.1f} on average; this project's settings {settings}")
    speedups = {key: r["examples_per_s"] / results[key.split("_")[0] + "_seed"]["examples_per_s"]
                for key, r in results.items()}  # each side against the seed's same side
    width = max(map(len, results)) + 2
    print(f"{'':{width}}{'examples/s':>12}{'tokens/s':>12}{'peak GiB':>10}{'MFU':>8}{'x seed':>8}")
    for key, r in results.items():
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        print(f"{key:{width}}{r['examples_per_s']:12.1f}{r['tokens_per_s']:12.0f}{r['peak_memory_gib']:10.2f}"
              f"{mfu:>8}{speedups[key]:8.2f}")
    summary = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
               "shape": "quick" if args.quick else "t5-small", "parameters": params, **settings, **results}
    for key, speedup in speedups.items():
        side, label = key.split("_", 1)
        if label != "seed":
            summary[f"{side}_speedup" if label == "project" else f"{side}_speedup_{label}"] = round(speedup, 2)
    print(f"training {summary['train_speedup']}x, generation {summary['generate_speedup']}x the seed's setup")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
