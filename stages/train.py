"""Stage 3: fine-tune (or train from scratch) the seq2seq model with Hugging Face's Seq2SeqTrainer.

Reads params seed, model.* and train.*; logs loss, learning rate, eval loss and system metrics (CPU, GPU,
memory) with DVCLive to dvclive/, and to Weights & Biases when train.report_to names wandb;
writes the model (safetensors), its tokenizer and generation config to models/.
"""

import os
from pathlib import Path

import datasets
import dvclive.monitor_system
import pynvml
import torch
from dvclive import Live
from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed
from transformers.integrations import DVCLiveCallback

from stages import modeling, params, tracking
from stages.errors import cli
from stages.outputs import remove, staged

TOKENIZED = Path("data/tokenized")
OUT = Path("models")
LIVE_DIR = "dvclive"
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


def training_arguments(hp, seed, output_dir, **overrides):
    """This project's Trainer settings (bench/throughput.py measures them): batches of similar lengths,
    bf16 autocast and TF32 on GPUs that have them (never fp16: T5's activations overflow it), fused AdamW."""
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
        dataloader_num_workers=2 if cuda else 0,  # on CPU, workers would take the cores the step needs
        dataloader_pin_memory=cuda,
        dataloader_persistent_workers=cuda,
        save_strategy="no",
        seed=seed,
    )
    return Seq2SeqTrainingArguments(**{**settings, **overrides})


@cli
def main():
    p = params.load()
    hp = p["train"]
    set_seed(p["seed"])
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZED / "tokenizer")
    data = datasets.load_from_disk(str(TOKENIZED)).remove_columns("id")
    model = modeling.build_model(p["model"], tokenizer)
    print(f"model: {p['model']['name']}, {model.num_parameters():,} parameters")
    if "wandb" in hp["report_to"]:
        tracking.configure_wandb()

    with staged(OUT) as tmp:
        args = training_arguments(hp, p["seed"], tmp / "trainer", eval_strategy="epoch", logging_steps=25,
                                  disable_tqdm=False, report_to=hp["report_to"],
                                  run_name=os.environ.get("DVC_EXP_NAME"))
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=data["train"],
                                 eval_dataset=data["validation"], processing_class=tokenizer,
                                 data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
        # report_to builds a Live() that would rewrite dvc.yaml; the plots are declared there by hand
        trainer.remove_callback(DVCLiveCallback)
        monitor_gpu_only_with_nvml()
        # `with`: an error mid-training must also stop DVCLive's monitor thread, or the process never exits
        with Live(LIVE_DIR, dvcyaml=False, save_dvc_exp=False, monitor_system=True) as live:
            trainer.add_callback(LiveCallback(live=live))
            trainer.train()
        trainer.save_model(str(tmp))  # safetensors weights, config, generation config, tokenizer
        remove(tmp / "trainer")


if __name__ == "__main__":
    main()
