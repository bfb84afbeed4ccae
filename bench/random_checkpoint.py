"""Write a randomly initialised checkpoint with t5-small's shape, to stand in for the Hub's t5-small
where the Hub cannot be reached (speed measurements: the weights' values do not change the work).

    python bench/random_checkpoint.py OUT_FOLDER --data data/raw/train.json

The tokenizer is this project's BPE trained on DATA's questions, contexts and answers; the model
keeps t5-small's vocabulary size (32,128 rows), so it costs what t5-small costs.
"""

import argparse
import sys
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from stages import squad, vocabulary

T5_SMALL = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                feed_forward_proj="relu", dropout_rate=0.1)  # t5-small's published config.json


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=Path("data/raw/train.json"))
    args = parser.parse_args()
    rows = squad.read_file(args.data)
    texts = [text for row in rows for text in (row["question"], row["context"], *row["answers"]["text"])]
    tokenizer = vocabulary.train_tokenizer(texts, T5_SMALL["vocab_size"] - 100)  # t5-small: 32,000 + 100 sentinels
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(**T5_SMALL, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"{args.out}: t5-small's shape, {model.num_parameters():,} parameters, "
          f"tokenizer of {len(tokenizer):,} tokens")


if __name__ == "__main__":
    main()
