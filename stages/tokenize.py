"""Stage 2: turn prepared rows into model inputs `question: ... context: ...` -> first gold answer
(tokenize.train_answers: all -> one training example per distinct gold answer). A context longer
than tokenize.max_source_length becomes overlapping windows (tokenize.stride tokens shared): training
and validation keep the windows that hold the answer, the test split keeps all of them.

Reads params model.name, model.scratch.vocab_size, tokenize.* and data.on_invalid; trains the tokenizer
when the model is built from scratch. Writes data/tokenized/ (datasets save_to_disk, plus tokenizer/) and
metrics/tokenize.json, a row per split: how many contexts were windowed and answers fell in no window, how many gold
answers no span of the context's tokens copies and how many the tokenizer cannot spell (encode ->
decode does not give them back), hence the best exact match extractive decoding and free generation
can reach.
"""

import hashlib
import json
import os
import random
from itertools import accumulate
from pathlib import Path

import datasets
from transformers import AutoConfig

from stages import hub, metrics, params, spans, squad, vocabulary, windows
from stages.errors import InputError, cli
from stages.outputs import staged, write_json

PREPARED = Path("data/prepared")
OUT = Path("data/tokenized")
REPORT = Path("metrics/tokenize.json")
READING = OUT / "reading.json"  # whether inputs hold the context (task.variant closed_book: not), for train
# encode is mostly Python: a process per two of the cores it may use (often one physical core) on a GPU
# machine's many; a 2-core machine keeps one, where two were no faster. macOS has no affinity to ask.
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
PROCESSES = max(1, CORES // 2)
REPORTED = ["id", "window", "source_tokens", "holds_answer", "windowed", "answer_in_no_window", "target_truncated",
            "golds_not_copyable", "golds_not_spelled", "copyable", "spellable"]  # encode's columns for the report


def encode(batch, tokenizer, max_source_length, max_target_length, stride, drop_too_long=False, reads_context=True):
    """One row per window of each question's input (windows.split; a context that fits is one window),
    with the context characters each input token covers (offsets: evaluation copies answers by them)
    and the first gold answer as its target ("" for a question without one: SQuAD v2's "no answer"):
    the window's own tokens of that answer at its place where they cover it (spans.answer_span), else
    the answer tokenized alone. holds_answer tells whether the window holds that answer; the other columns
    count per question, on its first window: what truncation cut, which gold answers no span of the context's
    tokens covers (extractive decoding cannot answer them) and which the tokenizer cannot spell
    (decoding their tokens does not give them back: free generation cannot answer them). A question
    too long to leave its context room is an InputError, or has no row with drop_too_long. Without
    `reads_context` (closed book) the input is the question alone and the target the answer tokenized alone."""
    contexts = batch["context"] if reads_context else [None] * len(batch["question"])
    per_question = windows.split(tokenizer, batch["question"], contexts, max_source_length, stride)
    head, tail = spans.target_specials(tokenizer)
    room = max_target_length - len(head) - len(tail)
    out = {key: [] for key in ["input_ids", "attention_mask", "offsets", "labels", *REPORTED]}
    per_question_golds = [list(zip(answers["text"], answers["answer_start"])) or [("", None)]
                          for answers in batch["answers"]]
    flat = tokenizer(text_target=[text for golds in per_question_golds for text, _ in golds],
                     add_special_tokens=False)["input_ids"]  # one call for the batch, not one per question
    ends = list(accumulate(map(len, per_question_golds)))
    for i, (question_windows, golds) in enumerate(zip(per_question, per_question_golds)):
        if not question_windows and not drop_too_long:
            raise InputError(f"id {batch['id'][i]!r}: question: {windows.too_long(max_source_length)}: raise "
                             "tokenize.max_source_length, or set data.on_invalid: drop to skip such questions")
        context = batch["context"][i]
        alone = flat[ends[i] - len(golds):ends[i]]
        sources = [spans.context_tokens(w.input_ids, w.offsets) for w in question_windows]
        # per window, each gold's tokens in it ([]: no answer; None: no span of them copies it)
        covering = [[gold_tokens(source, context, start, text) for text, start in golds] for source in sources]
        copied = [[tokens is not None for tokens in window_tokens] for window_tokens in covering]
        # what the model learns to write for each gold: its tokens in the first window covering it
        written = [next((c[g] for c in covering if c[g] is not None), alone[g]) for g in range(len(golds))]
        spelled_back = [metrics.exact_match(spelled, text) == 1 for spelled, (text, _) in
                        zip(tokenizer.batch_decode(written, skip_special_tokens=True), golds)]
        text, start = golds[0]
        holds = [start is None or not reads_context or w.first <= start and start + len(text) <= w.end
                 for w in question_windows]
        for window, (w, holds_answer) in enumerate(zip(question_windows, holds)):
            first = window == 0
            target = covering[window][0] if covering[window][0] is not None else alone[0]
            out["id"].append(batch["id"][i])
            out["window"].append(window)
            out["input_ids"].append(w.input_ids)
            out["attention_mask"].append([1] * len(w.input_ids))
            out["source_tokens"].append(len(w.input_ids))
            out["offsets"].append(w.offsets)
            out["labels"].append(head + target[:room] + tail)
            out["holds_answer"].append(holds_answer)
            out["windowed"].append(first and len(question_windows) > 1)
            out["answer_in_no_window"].append(first and not any(holds))
            out["target_truncated"].append(first and len(target) > room)
            out["golds_not_copyable"].append(sum(not any(c[g] for c in copied) for g in range(len(golds)))
                                             if first else 0)
            out["golds_not_spelled"].append(len(golds) - sum(spelled_back) if first else 0)
            # the model can match this question exactly only if some gold survives, up to SQuAD's normalisation
            out["copyable"].append(first and any(any(c) for c in copied))
            out["spellable"].append(first and any(spelled_back))
    return out


def gold_tokens(source, context, start, text):
    """A gold answer's tokens in one window: [] for no answer (start None), None where no span copies it."""
    if start is None:
        return []
    span = spans.answer_span(source, context, start, text)
    return None if span is None else source[0][span[0]:span[0] + span[1]].tolist()


def worker_processes(rows):
    """datasets.map's num_proc for a split of this many rows: PROCESSES where each gets 1,000 rows or more,
    else None, for this process (num_proc=1 would start a pool of one: 2.4 s more on 30k questions on the
    2-core machine). The same bytes either way (tests/test_tokenize.py)."""
    return PROCESSES if PROCESSES > 1 and rows >= 1000 * PROCESSES else None


def training_windows(encoded, no_answer_share, no_answer_labels, seed):
    """The rows to train on: windows that hold their answer, and a seeded `no_answer_share` of the others
    with the no-answer target, so that a window without the answer is not taught to invent one."""
    rng = random.Random(seed)
    keep, labels = [], []
    columns = encoded.select_columns(["holds_answer", "labels"]).to_dict()  # lists, not row-by-row reads
    for i, (holds, row_labels) in enumerate(zip(columns["holds_answer"], columns["labels"])):
        if holds or rng.random() < no_answer_share:
            keep.append(i)
            labels.append(row_labels if holds else no_answer_labels)
    return encoded.select(keep).remove_columns("labels").add_column("labels", labels)


def one_row_per_answer(batch):
    """Each question once per distinct gold answer text, that answer alone (once, without one)."""
    out = {key: [] for key in batch}
    for i, answers in enumerate(batch["answers"]):
        if not answers["text"]:
            for key in batch:
                out[key].append(batch[key][i])
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
    limit = getattr(hub.from_pretrained(AutoConfig, model_name), "max_position_embeddings", None)
    if limit and max_source_length > limit:
        raise InputError(f"tokenize.max_source_length = {max_source_length} is more than model.name = "
                         f"{model_name!r} can read ({limit} positions): set it to {limit} or less")


@cli(outputs=[REPORT])
def main():
    p = params.load()
    rows = {split: squad.read_prepared(PREPARED / f"{split}.jsonl") for split in squad.SPLITS}
    if params.is_scratch(p["model"]):
        train = rows["train"].select_columns(["question", "context"]).to_dict()
        texts = [squad.model_input(q, c) for q, c in zip(train["question"], train["context"])]
        tokenizer = vocabulary.train_tokenizer(texts, p["model"]["scratch"]["vocab_size"])
    else:
        check_source_length(p["model"]["name"], p["tokenize"]["max_source_length"])
        tokenizer = vocabulary.load_tokenizer(p["model"]["name"])

    settings = p["tokenize"]
    if settings["train_answers"] == "all":
        rows["train"] = rows["train"].map(one_row_per_answer, batched=True, desc="one row per gold answer")
    limits = {key: settings[key] for key in ("max_source_length", "max_target_length", "stride")}
    no_answer_labels = tokenizer(text_target="")["input_ids"]
    report = []  # a row per split: a bar chart in `dvc plots show`
    encoded = datasets.DatasetDict()
    drop_too_long = p["data"]["on_invalid"] == "drop"
    context = p["task"]["variant"] != "closed_book"  # extractive and generative read the same inputs
    for split, split_rows in rows.items():
        path = PREPARED / f"{split}.jsonl"
        try:
            enc = split_rows.map(encode, batched=True, remove_columns=split_rows.column_names,
                                 fn_kwargs={"tokenizer": tokenizer, **limits, "drop_too_long": drop_too_long,
                                            "reads_context": context},
                                 desc=f"tokenizing {split}", num_proc=worker_processes(len(split_rows)),
                                 new_fingerprint=fingerprint(path, tokenizer, [settings, drop_too_long, context]),
                                 load_from_cache_file=False)
        except InputError as e:
            raise InputError(f"{path}: {e}") from None
        asked = len(set(split_rows["id"]))  # train_answers: all repeats a question once per answer
        if not len(enc):
            raise InputError(f"{path}: all {asked} questions dropped: in each, "
                             f"{windows.too_long(limits['max_source_length'])}: raise tokenize.max_source_length")
        counts = enc.select_columns(REPORTED).to_dict()  # as lists: a Dataset's columns are read row by row
        ceilings = {"extractive": {}, "generation": {}}  # question -> can some gold be matched exactly
        for qid, window, copyable, spellable in zip(counts["id"], counts["window"], counts["copyable"],
                                                    counts["spellable"]):
            if window == 0:
                ceilings["extractive"][qid] = ceilings["extractive"].get(qid, False) or copyable
                ceilings["generation"][qid] = ceilings["generation"].get(qid, False) or spellable
        report.append({
            "split": split,
            "questions": asked,
            "questions_too_long": asked - len(set(counts["id"])),  # dropped (data.on_invalid: drop)
            "source_tokens_mean": round(sum(counts["source_tokens"]) / len(enc), 1),
            "windowed": sum(counts["windowed"]),  # contexts longer than the source budget
            "windows": len(enc),
            "answers_in_no_window": sum(counts["answer_in_no_window"]),
            "targets_truncated": sum(counts["target_truncated"]),
            "gold_answers_not_copyable": sum(counts["golds_not_copyable"]),
            "gold_answers_not_spelled": sum(counts["golds_not_spelled"]),
            **{f"exact_match_ceiling_{mode}": round(100 * sum(reached.values()) / asked, 2)
               if context or mode == "generation" else None  # nothing to copy from: does not apply
               for mode, reached in ceilings.items()},
            "reads_context": context,
        })
        if split != "test":  # the test split keeps every window and its offsets: evaluation answers each
            share = settings["no_answer_windows"] if split == "train" else 0.0
            enc = training_windows(enc, share, no_answer_labels, p["seed"]).remove_columns("offsets")
            if not len(enc):
                raise InputError(
                    f"{path}: no {split} example: the answers of all {asked} questions lie across the windows' "
                    f"edges, in no window of tokenize.max_source_length = {limits['max_source_length']} tokens "
                    f"sharing tokenize.stride = {limits['stride']}: raise either")
        report[-1]["examples"] = len(enc)
        encoded[split] = enc.remove_columns([c for c in REPORTED if c not in ("id", "window")])
        print(report[-1])

    with staged(OUT) as tmp:
        encoded.save_to_disk(str(tmp))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        (tmp / READING.name).write_text(json.dumps({"context": context}) + "\n")
    write_json(REPORT, report)


if __name__ == "__main__":
    main()
