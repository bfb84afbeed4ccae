"""Stage 2: turn prepared rows into model inputs `question: ... context: ...` -> first gold answer.

Reads params model.name, model.scratch.vocab_size and tokenize.*; trains the tokenizer when the model
is built from scratch. Writes data/tokenized/ (datasets save_to_disk, plus tokenizer/) and
metrics/tokenize.json: how many inputs and answers truncation cut, and how many gold answers the
tokenizer cannot spell (encode -> decode does not give them back), hence the best reachable exact match.
"""

from pathlib import Path

import datasets

from stages import metrics, modeling, params, squad
from stages.errors import cli
from stages.outputs import staged, write_json

PREPARED = Path("data/prepared")
OUT = Path("data/tokenized")
REPORT = Path("metrics/tokenize.json")


def encode(batch, tokenizer, max_source_length, max_target_length):
    sources = [squad.model_input(q, c) for q, c in zip(batch["question"], batch["context"])]
    targets = [answers["text"][0] for answers in batch["answers"]]
    inputs = tokenizer(sources, max_length=max_source_length, truncation=True, return_offsets_mapping=True)
    labels = tokenizer(text_target=targets, max_length=max_target_length, truncation=True,
                       return_offsets_mapping=True)
    # the last character each truncated encoding kept tells what truncation cut, without a second pass
    source_kept = [max(end for _, end in offsets) for offsets in inputs["offset_mapping"]]
    target_kept = [max(end for _, end in offsets) for offsets in labels["offset_mapping"]]
    answer_end = [len(squad.model_input(q, "")) + a["answer_start"][0] + len(a["text"][0])
                  for q, a in zip(batch["question"], batch["answers"])]
    golds = [answers["text"] for answers in batch["answers"]]
    spelled = [tokenizer.batch_decode(tokenizer(text_target=gs, add_special_tokens=False)["input_ids"],
                                      skip_special_tokens=True) for gs in golds]  # encode -> decode
    return {
        "id": batch["id"],
        "input_ids": inputs["input_ids"],
        "attention_mask": inputs["attention_mask"],
        "labels": labels["input_ids"],
        "source_truncated": [kept < len(s.rstrip()) for kept, s in zip(source_kept, sources)],
        "answer_cut": [end > kept for end, kept in zip(answer_end, source_kept)],
        "target_truncated": [kept < len(t.rstrip()) for kept, t in zip(target_kept, targets)],
        "golds_not_spelled": [sum(s != g for s, g in zip(ss, gs)) for ss, gs in zip(spelled, golds)],
        # the model can match this question exactly only if some gold survives, up to SQuAD's normalisation
        "reachable": [any(metrics.exact_match(s, g) for s, g in zip(ss, gs)) for ss, gs in zip(spelled, golds)],
    }


@cli
def main():
    p = params.load()
    rows = {split: datasets.load_dataset("json", data_files=str(PREPARED / f"{split}.jsonl"), split="train")
            for split in squad.SPLITS}
    if modeling.is_scratch(p["model"]):
        train = rows["train"]
        texts = [squad.model_input(q, c) for q, c in zip(train["question"], train["context"])]
        tokenizer = modeling.train_tokenizer(texts, p["model"]["scratch"]["vocab_size"])
    else:
        tokenizer = modeling.load_tokenizer(p["model"]["name"])

    limits = p["tokenize"]
    report = {}
    encoded = datasets.DatasetDict()
    for split, split_rows in rows.items():
        enc = split_rows.map(encode, batched=True, remove_columns=split_rows.column_names,
                             fn_kwargs={"tokenizer": tokenizer, **limits}, desc=f"tokenizing {split}")
        report[split] = {
            "examples": len(enc),
            "source_tokens_mean": round(sum(map(len, enc["input_ids"])) / len(enc), 1),
            "sources_truncated": sum(enc["source_truncated"]),
            "answers_cut_from_source": sum(enc["answer_cut"]),
            "targets_truncated": sum(enc["target_truncated"]),
            "gold_answers_not_spelled": sum(enc["golds_not_spelled"]),
            "exact_match_ceiling": round(100 * sum(enc["reachable"]) / len(enc), 2),
        }
        encoded[split] = enc.remove_columns(["source_truncated", "answer_cut", "target_truncated",
                                             "golds_not_spelled", "reachable"])
        print(f"{split}: {report[split]}")

    with staged(OUT) as tmp:
        encoded.save_to_disk(str(tmp))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
    write_json(REPORT, report)


if __name__ == "__main__":
    main()
