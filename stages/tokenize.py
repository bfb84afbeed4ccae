"""Stage 2: turn prepared rows into model inputs `question: ... context: ...` -> first gold answer
(tokenize.train_answers: all -> one training example per distinct gold answer).

Reads params model.name, model.scratch.vocab_size and tokenize.*; trains the tokenizer when the model
is built from scratch. Writes data/tokenized/ (datasets save_to_disk, plus tokenizer/) and
metrics/tokenize.json: how many inputs and answers truncation cut, and how many gold answers the
tokenizer cannot spell (encode -> decode does not give them back), hence the best reachable exact match.
"""

import hashlib
import json
from pathlib import Path

import datasets
from transformers import AutoConfig

from stages import metrics, modeling, params, squad
from stages.errors import InputError, cli
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


def one_row_per_answer(batch):
    """Each question once per distinct gold answer text, that answer alone."""
    out = {key: [] for key in batch}
    for i, answers in enumerate(batch["answers"]):
        seen = set()
        for text, start in zip(answers["text"], answers["answer_start"]):
            if text not in seen:
                seen.add(text)
                for key in batch:
                    out[key].append(batch[key][i])
                out["answers"][-1] = {"text": [text], "answer_start": [start]}
    return out


def fingerprint(path, tokenizer, settings):
    """A content hash to name the tokenized split by: datasets cannot hash the tokenizer argument of
    `encode` and would draw a random fingerprint, so identical runs would write different outputs."""
    digest = hashlib.sha256(Path(path).read_bytes())
    digest.update(json.dumps([tokenizer.get_vocab(), type(tokenizer).__name__, settings], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def check_source_length(model_name, max_source_length):
    """Models with learned positions (BART: 1,024) cannot read longer inputs: say so here, not with an
    IndexError deep inside the model at the first long batch of training."""
    limit = getattr(modeling.from_pretrained(AutoConfig, model_name), "max_position_embeddings", None)
    if limit and max_source_length > limit:
        raise InputError(f"tokenize.max_source_length = {max_source_length} is more than model.name = "
                         f"{model_name!r} can read ({limit} positions): set it to {limit} or less")


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
        check_source_length(p["model"]["name"], p["tokenize"]["max_source_length"])
        tokenizer = modeling.load_tokenizer(p["model"]["name"])

    settings = p["tokenize"]
    if settings["train_answers"] == "all":
        rows["train"] = rows["train"].map(one_row_per_answer, batched=True, desc="one row per gold answer")
    limits = {key: settings[key] for key in ("max_source_length", "max_target_length")}
    report = {}
    encoded = datasets.DatasetDict()
    for split, split_rows in rows.items():
        enc = split_rows.map(encode, batched=True, remove_columns=split_rows.column_names,
                             fn_kwargs={"tokenizer": tokenizer, **limits}, desc=f"tokenizing {split}",
                             new_fingerprint=fingerprint(PREPARED / f"{split}.jsonl", tokenizer, settings),
                             load_from_cache_file=False)
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
