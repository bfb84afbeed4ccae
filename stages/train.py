"""Stage 3: fine-tune (or train from scratch) the seq2seq model with Hugging Face's Seq2SeqTrainer.

Reads params seed, model.* and train.*; logs loss, learning rate and eval loss with DVCLive to dvclive/;
writes the model (safetensors), its tokenizer and generation config to models/.
"""

from pathlib import Path

import datasets
from dvclive import Live
from transformers import (AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments,
                          set_seed)
from transformers.integrations import DVCLiveCallback

from stages import modeling, params
from stages.errors import cli
from stages.outputs import remove, staged

TOKENIZED = Path("data/tokenized")
OUT = Path("models")
LIVE_DIR = "dvclive"


@cli
def main():
    p = params.load()
    hp = p["train"]
    set_seed(p["seed"])
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZED / "tokenizer")
    data = datasets.load_from_disk(str(TOKENIZED)).remove_columns("id")
    model = modeling.build_model(p["model"], tokenizer)
    print(f"model: {p['model']['name']}, {model.num_parameters():,} parameters")

    with staged(OUT) as tmp:
        args = Seq2SeqTrainingArguments(
            output_dir=str(tmp / "trainer"),
            learning_rate=hp["lr"],
            num_train_epochs=hp["epochs"],
            per_device_train_batch_size=hp["batch_size"],
            per_device_eval_batch_size=hp["batch_size"],
            warmup_steps=hp["warmup_steps"],
            weight_decay=hp["weight_decay"],
            eval_strategy="epoch",
            logging_steps=25,
            save_strategy="no",
            report_to=["dvclive"],
            seed=p["seed"],
            disable_tqdm=False,
        )
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=data["train"],
                                 eval_dataset=data["validation"], processing_class=tokenizer,
                                 data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
        # report_to builds a Live() that would rewrite dvc.yaml; the plots are declared there by hand
        trainer.remove_callback(DVCLiveCallback)
        trainer.add_callback(DVCLiveCallback(live=Live(LIVE_DIR, dvcyaml=False, save_dvc_exp=False)))
        trainer.train()
        trainer.save_model(str(tmp))  # safetensors weights, config, generation config, tokenizer
        remove(tmp / "trainer")


if __name__ == "__main__":
    main()
