"""Stage 3: fine-tune (or train from scratch) the seq2seq model with Hugging Face's Seq2SeqTrainer.

Reads params seed, model.*, train.*, tokenize.* and data.source / splits; logs loss, learning rate, eval loss,
validation EM / F1 / ROUGE-L and system metrics (CPU, GPU, memory) with DVCLive to dvclive/plots/metrics/, and
to Weights & Biases when train.report_to names wandb; writes the model (safetensors), its tokenizer, generation
config and model card (stages/card.py) to models/.
"""

import ctypes
import hashlib
import json
import os
import random
import shutil
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

import datasets
import dvclive.monitor_system
import pynvml
import torch
import torch.distributed as dist
from accelerate.utils import broadcast_object_list
from dvclive import Live
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
from torch.utils.data import DataLoader
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainer,
                          Seq2SeqTrainingArguments, set_seed)
from transformers.integrations import DVCLiveCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from stages import card, decoding, metrics, modeling, packing, params, squad, tracking
from stages.errors import InputError, cli
from stages.outputs import remove, staged, staging_path

TOKENIZED = Path("data/tokenized")
VALIDATION_ROWS = Path("data/prepared/validation.jsonl")
TOKENIZE_REPORT = Path("metrics/tokenize.json")  # split sizes and ceilings, for the model card
VALIDATION_METRICS = ("exact_match", "f1", "rougeL")  # answered validation questions, at each evaluation
OUT = Path("models")
CHECKPOINTS = Path("checkpoints")  # outside the stage's outs, which `dvc repro` deletes before it runs
CURVES = Path("dvclive/plots/metrics")  # DVCLive's curves and system metrics, in git (dvc.yaml: plots)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
TIMINGS = ("runtime", "samples_per_second", "steps_per_second", "total_flos")


class LiveCallback(DVCLiveCallback):
    """DVCLive logging at the Trainer's global step (not DVCLive's count of log calls), without
    throughput timings: they are not training curves and differ between identical runs."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.live.step = state.global_step
        logs = {key: value for key, value in logs.items() if not key.endswith(TIMINGS)}
        super().on_log(args, state, control, logs=logs, **kwargs)


def monitor_gpu_only_with_nvml():
    """DVCLive samples GPU and CPU together: without an NVIDIA driver every sample fails and not even
    CPU metrics are logged, so GPU sampling is switched off where NVML cannot start."""
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        dvclive.monitor_system.GPU_AVAILABLE = False


class TokenBudgetBatches:
    """Training batches of similar-length examples, each at most `max_examples` examples and at most
    `max_tokens` padded source tokens (fairseq's --max-tokens): short inputs come in large batches,
    long ones in small batches that still fit in memory; an input longer than the budget is a batch
    of its own. Each epoch reshuffles which equal-length examples share a batch and the order of the
    batches; their number stays the same, as the Trainer's learning-rate schedule needs."""

    def __init__(self, lengths, max_examples, max_tokens, seed):
        self.lengths, self.max_examples, self.max_tokens = lengths, max_examples, max_tokens
        self.seed, self.epoch = seed, 0
        self.count = len(self.batches())

    def set_epoch(self, epoch):  # accelerate's data loader, and QATrainer._run_epoch where it cannot
        self.epoch = epoch

    def batches(self):
        rng = random.Random(f"{self.seed}:{self.epoch}")
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], rng.random()))
        batches, batch = [], []
        for i in order:  # ascending length: the newest example is the batch's longest
            if batch and (len(batch) == self.max_examples or (len(batch) + 1) * self.lengths[i] > self.max_tokens):
                batches.append(batch)
                batch = []
            batch.append(i)
        batches.append(batch)
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        return iter(self.batches())

    def __len__(self):
        return self.count


class EpochSeededLengthSampler(LengthGroupedSampler):
    """group_by_length's sampler drawing each epoch's order from (seed, epoch), not from the global
    random state: a run resumed in the middle of an epoch sees the batches an uninterrupted run saw."""

    def __init__(self, *args, seed, **kwargs):
        super().__init__(*args, generator=torch.Generator(), **kwargs)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.generator.manual_seed(self.seed * 1_000_003 + epoch)


class ValidationQuestions:
    """Validation questions answered at each evaluation as the evaluate stage answers the test split by
    default (long contexts as windows, extractive decoding; closed book: the question alone, free
    generation): exact match, F1 and ROUGE-L as curves over
    training. `count` of them, spread evenly over the split (consecutive rows are one article's).
    Decoding settings come from the training's own params, so trying evaluate.* does not retrain."""

    def __init__(self, path, count, tokenize_params, evaluate_params):
        rows = squad.read_prepared(path)
        self.rows = rows.select(range(0, len(rows), max(1, len(rows) // count))[:count])
        self.tokenize_params, self.evaluate_params = tokenize_params, evaluate_params

    def scores(self, model, tokenizer):
        answers = decoding.answer_questions(model, tokenizer, self.rows["question"], self.rows["context"],
                                            self.tokenize_params, self.evaluate_params)
        summary, _ = metrics.score({row["id"]: row["answers"]["text"] for row in self.rows},
                                   {qid: text for qid, text in zip(self.rows["id"], answers) if text is not None})
        return {name: summary[name] for name in VALIDATION_METRICS}


def answering_model(model):
    """The model the main process answers validation questions with; None on the other processes. Under
    FSDP, whose processes each hold a shard of the parameters, every process must call this: they gather
    the full parameters (torch.distributed.checkpoint's full state dict) into an unsharded copy on the main
    process, which then generates alone. Generating with the sharded model, the main process's all-gathers
    would wait forever for processes that do not generate. A DDP or single-process model answers as it is."""
    if not isinstance(model, (FSDPModule, FullyShardedDataParallel)):
        return model if not dist.is_initialized() or dist.get_rank() == 0 else None
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    sharded = getattr(model, "module", model)  # FSDP1 wraps the model, FSDP2 shards it in place
    with torch.device("meta"):  # no memory until the gathered weights are put in
        copy = AutoModelForSeq2SeqLM.from_config(sharded.config)
    copy.load_state_dict(state, assign=True)
    copy.tie_weights()  # assign=True gave tied weights copies of their own
    copy.generation_config = sharded.generation_config
    return modeling.tuned(copy).to(modeling.device())


class QATrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose training batches are rows of several examples, as many rows as batch_tokens
    holds, with `packing` (stages/packing.py; the model then needs packing.enable); else follow a token
    budget when batch_tokens > 0, else are grouped by length in an order fixed by seed and epoch. Each
    evaluation also answers `validation_questions` (a ValidationQuestions, or None for the eval loss alone)."""

    def __init__(self, *args, batch_tokens=0, packing=False, validation_questions=None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.torch_compile and self.args.device.type == "cpu":
            # inductor's C++ kernels add up embedding gradients with atomic adds, in any order; in deterministic
            # mode it leaves them to PyTorch's own kernels: the same model bytes run after run. Buffers it
            # allocates are written before they are read, so they need not be filled with NaN first.
            torch.use_deterministic_algorithms(True)
            torch.utils.deterministic.fill_uninitialized_memory = False
            # T5's position bias needs a gradient, so a CPU runs SDPA as separate unfused ops; T5's own attention
            # code lets inductor fuse scale, bias, mask and softmax: 1.5x the steps/s (bench/README.md). A GPU
            # keeps SDPA, whose memory-efficient kernel takes the bias without a (queries, keys) tensor per layer.
            self.model.set_attn_implementation("eager")
        self.batch_tokens, self.packing = batch_tokens, packing
        self.validation_questions = validation_questions
        self.epoch_sampler = None  # the training order's sampler, once the data loader is built

    def evaluation_loop(self, dataloader, description, *args, metric_key_prefix="eval", **kwargs):
        output = super().evaluation_loop(dataloader, description, *args, metric_key_prefix=metric_key_prefix, **kwargs)
        if description == "Evaluation" and self.validation_questions is not None:  # not predict()'s loop
            # the main process answers; every process gets the scores (the best model is chosen on them)
            model = answering_model(self.model)
            scores = self.validation_questions.scores(model, self.processing_class) if model is not None else None
            scores = broadcast_object_list([scores])[0]
            output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value in scores.items()})
        return output

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            self.epoch_sampler = EpochSeededLengthSampler(sampler.batch_size, lengths=sampler.lengths,
                                                          seed=self.args.seed)
            return self.epoch_sampler
        return sampler

    def _issue_warnings_after_load(self, load_result):
        # a checkpoint holds a tied weight once (T5: shared.weight), so its other names are "missing"
        tied = getattr(self.model, "all_tied_weights_keys", None) or {}
        load_result.missing_keys[:] = [key for key in load_result.missing_keys if key not in tied]
        super()._issue_warnings_after_load(load_result)

    def _build_accelerator_args(self, **kwargs):
        # train.compile: one graph for every batch length; transformers' default compiles each new shape
        # until it guesses which dimensions vary (3 graphs here, ~1 min each on 2 cores: bench/README.md)
        args = super()._build_accelerator_args(**kwargs)
        args["dynamo_plugin"].dynamic = True
        return args

    def _run_epoch(self, *args, epoch, **kwargs):
        # accelerate's set_epoch misses a sampler behind both its process shard and its resume skipper
        # (several processes, resumed mid-epoch), so each epoch's order is set here, where the epoch is known
        if self.epoch_sampler is not None:
            self.epoch_sampler.set_epoch(epoch)
        return super()._run_epoch(*args, epoch=epoch, **kwargs)

    def get_train_dataloader(self):
        if not (self.batch_tokens or self.packing):
            return super().get_train_dataloader()
        data = self.train_dataset
        if isinstance(data, datasets.Dataset):
            data = self._remove_unused_columns(data, description="Training")

        def column(name):  # as a list: a Dataset's Column reads row by row; or a list of examples (bench/)
            return list(data[name]) if isinstance(data, datasets.Dataset) else [row[name] for row in data]
        sources = column("input_ids")
        collate = self.data_collator
        if self.packing:
            targets = column("labels")
            data = packing.PackedRows(sources, targets, *packing.row_lengths(sources, targets))
            rows = max(1, self.batch_tokens // data.source_length)  # a row may be longer than the budget
            self.epoch_sampler = packing.PackedBatches(len(data), rows, self.args.seed)
            collate = packing.collate
            if self.is_world_process_zero():
                real = data.real_shares()
                print(f"packing: {len(sources):,} examples in {len(data):,} rows of {data.source_length} source and "
                      f"{data.target_length} target tokens ({real[0]:.0%} and {real[1]:.0%} of them examples' "
                      f"tokens), {rows} rows a batch")
        else:
            self.epoch_sampler = TokenBudgetBatches([len(ids) for ids in sources],
                                                    self.args.per_device_train_batch_size, self.batch_tokens,
                                                    self.args.seed)
        return self.accelerator.prepare(DataLoader(
            data, batch_sampler=self.epoch_sampler, collate_fn=collate,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers))


def training_arguments(hp, seed, output_dir, **overrides):
    """This project's Trainer settings (bench/throughput.py measures them): batches of similar lengths,
    bf16 autocast and TF32 on GPUs that have them (never fp16: T5's activations overflow it), fused AdamW,
    and with train.compile the training step compiled by torch.compile (inductor: C++ on a CPU, Triton on
    a GPU), which fuses the element-wise work between the matrix products (bench/README.md)."""
    cuda = torch.cuda.is_available()
    settings = dict(
        output_dir=str(output_dir),
        learning_rate=hp["lr"],
        num_train_epochs=hp["epochs"],
        per_device_train_batch_size=hp["batch_size"],
        per_device_eval_batch_size=hp["batch_size"],
        warmup_steps=hp["warmup_steps"],
        weight_decay=hp["weight_decay"],
        train_sampling_strategy="group_by_length",  # little padding: 30% more steps/s on CPU here
        bf16=modeling.bf16_supported(),
        tf32=True if cuda and torch.cuda.get_device_capability()[0] >= 8 else None,  # Ampere and newer
        optim="adamw_torch_fused",
        torch_compile=hp["compile"],  # training only: evaluation and generation run the model as it is
        # on a GPU, workers pad the next batches meanwhile (256 examples: ~25 ms); on a CPU they take its cores
        use_cpu=not cuda,  # several CPU processes under `accelerate launch` then train with gloo
        dataloader_num_workers=4 if cuda else 0,
        dataloader_pin_memory=cuda,
        dataloader_persistent_workers=cuda,
        logging_nan_inf_filter=not cuda,  # its NaN check waits for the GPU at every step
        prediction_loss_only=True,  # eval loss only: no logits of the whole validation split piling up on the GPU
        save_strategy="no",  # the train stage saves checkpoints to resume from (train.save_steps)
        seed=seed,
    )
    return Seq2SeqTrainingArguments(**{**settings, **overrides})


def require_cpp_compiler():
    """On a CPU torch.compile writes C++ and builds it: without a compiler it would fail at the first step."""
    from torch._inductor import cpp_builder  # not imported by torch itself
    try:
        cpp_builder.get_cpp_compiler()
    except Exception as e:  # noqa: BLE001 -- inductor's InvalidCxxCompiler, or Windows' own checks
        raise InputError(f"train.compile: torch.compile on the CPU needs a C++ compiler ({str(e).splitlines()[0]}); "
                         "install g++ (Linux, macOS: clang++) or Visual Studio's C++ tools (Windows), "
                         "or set train.compile: false") from None


def die_with_the_launcher():
    """torchrun starts its workers in sessions of their own: without this, a launcher killed with
    SIGKILL would leave them training on, writing checkpoints a new run resumes from."""
    if "LOCAL_RANK" in os.environ and sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@cli(outputs=[CURVES])
def main():
    die_with_the_launcher()
    p = params.load()
    hp = p["train"]
    if hp["packing"] and not torch.cuda.is_available():
        raise InputError("train.packing: FlexAttention trains on a CUDA GPU only (PyTorch has no backward for it "
                         "on the CPU); set train.packing: false")
    if hp["compile"] and not torch.cuda.is_available():
        require_cpp_compiler()
    set_seed(p["seed"])
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZED / "tokenizer")
    data = datasets.load_from_disk(str(TOKENIZED)).remove_columns(["id", "window"])
    model = modeling.build_model(p["model"], tokenizer)
    context = json.loads((TOKENIZED / "reading.json").read_text())["context"]  # false: closed book
    modeling.keep_reading(model, p["tokenize"], context)
    if hp["packing"]:
        packing.enable(model)
    if "wandb" in hp["report_to"]:
        tracking.configure_wandb()

    checkpoints = CHECKPOINTS / run_key(p)
    # keep_best: the Trainer keeps the checkpoint of the best validation F1 and loads it at the end,
    # which needs a checkpoint at each evaluation, so both happen at the end of each epoch
    saving = (dict(save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="f1")
              if hp["keep_best"] else dict(save_strategy="steps", save_steps=hp["save_steps"]))
    args = training_arguments(hp, p["seed"], checkpoints, eval_strategy="epoch", logging_steps=25,
                              save_total_limit=hp["keep_checkpoints"], disable_tqdm=False,
                              report_to=hp["report_to"], run_name=os.environ.get("DVC_EXP_NAME"), **saving)
    decode = {"batch_size": 2 * hp["batch_size"], "max_new_tokens": p["tokenize"]["max_target_length"],
              "extractive": True}  # answers as long as the targets trained on; closed book: free generation
    validation_questions = (ValidationQuestions(VALIDATION_ROWS, hp["eval_questions"],
                                                {**p["tokenize"], "context": context}, decode)
                            if hp["eval_questions"] else None)
    trainer = QATrainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
                        processing_class=tokenizer, data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
                        batch_tokens=hp["batch_tokens"], packing=hp["packing"],
                        validation_questions=validation_questions)
    # report_to builds a Live() that would rewrite dvc.yaml; the plots are declared there by hand
    trainer.remove_callback(DVCLiveCallback)
    if trainer.is_fsdp_enabled and "FULL_STATE_DICT" not in str(trainer.accelerator.state.fsdp_plugin.state_dict_type):
        raise InputError("train.launcher: FSDP's sharded checkpoints would leave models/ empty; "
                         "add --fsdp_state_dict_type FULL_STATE_DICT")
    main_process = trainer.is_world_process_zero()  # under `accelerate launch`, only it logs and writes
    # all processes resume the main one's choice (several machines: checkpoints/ on a shared file system)
    resume = broadcast_object_list([last_checkpoint(checkpoints, trainer.args.world_size)])[0]
    if main_process:
        print(f"model: {p['model']['name']}, {model.num_parameters():,} parameters, "
              f"{trainer.args.world_size} process(es)")
        if resume:
            print(f"resuming from {resume} (an interrupted run of these params and data)")
        monitor_gpu_only_with_nvml()
    # `with`: an error mid-training must also stop DVCLive's monitor thread, or the process never exits.
    # The curves are written beside the checkpoints (a resumed run continues them) and replace the git-tracked
    # ones once the run has finished (a failed or interrupted one puts those back: errors.restore).
    live_dir = checkpoints / "dvclive"
    logger = (Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, monitor_system=True) if main_process
              else nullcontext())
    with logger as live:
        if live:
            trainer.add_callback(LiveCallback(live=live))
        try:
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        except KeyboardInterrupt:
            saved = last_checkpoint(checkpoints, trainer.args.world_size)
            raise KeyboardInterrupt(f"training stopped at step {trainer.state.global_step}; `dvc repro` resumes "
                                    f"from {saved}" if saved else "training stopped before its first checkpoint; "
                                    "`dvc repro` starts it again") from None
    # safetensors weights, config, generation config, tokenizer; every process joins in (FSDP gathers
    # the weights from all of them), the main one writes
    with staged(OUT) if main_process else nullcontext(staging_path(OUT)) as tmp:
        trainer.save_model(str(tmp))
        if main_process:  # a pickle of the Trainer's settings, the run's name and paths among them: not the model
            (tmp / "training_args.bin").unlink()
        if main_process:
            card.write(tmp / "README.md", p, model, json.loads(TOKENIZE_REPORT.read_text()),
                       trainer.state.log_history)
    if main_process:
        with staged(CURVES) as tmp:
            shutil.copytree(live_dir / "plots" / "metrics", tmp)
        remove(checkpoints)  # done: nothing left to resume


def run_key(p):
    """Names a run's checkpoint folder after its params and data: a run resumes only its own checkpoints."""
    digest = hashlib.sha256(json.dumps([p["seed"], p["model"], {k: v for k, v in p["train"].items() if k != "report_to"},
                                        p["tokenize"]], sort_keys=True).encode())
    for path in sorted(TOKENIZED.rglob("*")) + [VALIDATION_ROWS]:
        if path.is_file():
            digest.update(str(path).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def last_checkpoint(folder, processes=1):
    """The newest complete checkpoint in folder, or None. Each process saves its random state, then
    the main one writes trainer_state.json, without waiting for the others: a checkpoint counts once
    all of these are there, so one a kill cut short is passed over."""
    rng_states = ["rng_state.pth"] if processes == 1 else [f"rng_state_{rank}.pth" for rank in range(processes)]

    def complete(checkpoint):
        try:
            started = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] > 0
        except (OSError, ValueError, KeyError):
            return False
        return started and all((checkpoint / name).is_file() for name in rng_states)
    done = [c for c in folder.glob("checkpoint-*") if c.name.split("-")[1].isdigit() and complete(c)]
    return max(done, key=lambda c: int(c.name.split("-")[1]), default=None)


if __name__ == "__main__":
    main()
