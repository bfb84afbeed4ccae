"""SQuAD-format data: load a split from the Hub or a local folder, check records, build model inputs.

Every source becomes the same flat rows as the Hub's `squad`:
id, title, context, question, answers {text: [...], answer_start: [...]}; SQuAD v2.0's
unanswerable questions (`squad_v2`, is_impossible) have empty answer lists.
"""

from pathlib import Path

import datasets

from stages import hub
from stages.errors import InputError
from stages.params import SPLIT_SPEC

SPLITS = ("train", "validation", "test")
FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def model_input(question, context):
    return f"question: {question} context: {context}"


def load_split(source, spec, shuffle_seed=None):
    """Rows of `spec` (Hugging Face slice syntax, e.g. train[:20000]) from `source`, where they came from
    and which rows of it they are (begin, end).
    With a shuffle_seed the slice is taken from the split shuffled with that seed: slices of one split
    stay disjoint, but hold a random sample instead of consecutive (for SQuAD: whole-article) rows."""
    match = SPLIT_SPEC.match(spec)
    if not match:
        raise InputError(f"split {spec!r} is not of the form name[start:stop], e.g. train[:20000]")
    name, start, stop = match.groups()
    folder = hub.local_path(source, "data.source")
    if folder:
        path = split_file(folder, name)
        rows, origin = read_file(path), str(path)
    else:
        hub.require_hub(source, "data.source", "point data.source at a folder holding <split>.json files")
        try:
            rows = datasets.load_dataset(source, split=name)
        except Exception as e:  # the Hub's errors have many types; all mean "can't load this id"
            raise InputError(f"data.source = {source!r}: cannot load split {name!r} from the Hub ({e})") from None
        rows, origin = check_columns(rows, f"{source}:{name}"), f"{source}:{name}"
    begin, end = slice_bounds(start, stop, len(rows), spec, origin)
    if shuffle_seed is not None:
        rows = rows.shuffle(seed=shuffle_seed)
    return rows.select(range(begin, end)), origin, (begin, end)


def check_disjoint(slices):
    """slices: {param name: (origin, (begin, end))}. Two slices of one split must not share rows: a
    validation or test question seen in training would make its metrics meaningless. (With data.shuffle
    the rows are positions in the shuffled split.)"""
    problems = [f"{a} and {b} share rows {max(ra[0], rb[0])}-{min(ra[1], rb[1]) - 1} of {oa}"
                for i, (a, (oa, ra)) in enumerate(slices.items()) for b, (ob, rb) in list(slices.items())[i + 1:]
                if oa == ob and max(ra[0], rb[0]) < min(ra[1], rb[1])]
    if problems:
        raise InputError("; ".join(problems) + ": make the slices disjoint")


def slice_bounds(start, stop, n, spec, origin):
    """Resolve a slice like the Hub does (negative from the end, % rounded), but never shrink it silently."""

    def resolve(bound, default):
        if bound is None:
            return default
        if bound.endswith("%"):
            value = round(int(bound[:-1]) * n / 100)
        else:
            value = int(bound)
        if abs(value) > n:
            raise InputError(f"split {spec!r} asks for row {value}, but {origin} has only {n} rows")
        return value + n if value < 0 else value

    begin, end = resolve(start, 0), resolve(stop, n)
    if begin >= end:
        raise InputError(f"split {spec!r} selects no rows of {origin} ({n} rows)")
    return begin, end


def split_file(folder, name):
    found = [folder / f"{name}{ext}" for ext in FILE_FORMATS if (folder / f"{name}{ext}").is_file()]
    if not found:
        raise InputError(f"{folder}: no {name}.json, {name}.jsonl or {name}.parquet for split {name!r}")
    if len(found) > 1:
        raise InputError(f"{folder}: split {name!r} is ambiguous ({', '.join(p.name for p in found)}); keep one")
    return found[0]


def read_file(path):
    """A SQuAD v1.1 / v2.0 .json (nested articles) or a flat .jsonl/.parquet file as flat rows."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    nested = path.suffix == ".json"
    try:
        rows = datasets.load_dataset(FILE_FORMATS[path.suffix], data_files=str(path), split="train",
                                     **({"field": "data"} if nested else {}))
    except Exception as e:  # datasets wraps JSON and Arrow errors in several types
        cause = e.__cause__ or e
        raise InputError(f"{path}: cannot be read as {'SQuAD JSON' if nested else path.suffix[1:]} "
                         f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})") from None
    if nested:
        rows = flatten_articles(rows, path)
    return check_columns(rows, str(path))


def flatten_articles(articles, path):
    if "paragraphs" not in articles.column_names:
        raise InputError(f"{path}: expected SQuAD v1.1 / v2.0 JSON, {{\"data\": [{{\"title\", \"paragraphs\": [...]}}]}}")

    def flatten(batch):
        out = {"id": [], "title": [], "context": [], "question": [], "answers": []}
        for title, paragraphs in zip(batch.get("title", [""] * len(batch["paragraphs"])), batch["paragraphs"]):
            for paragraph in paragraphs or []:
                for qa in paragraph.get("qas") or []:
                    answers = qa.get("answers")
                    out["id"].append(qa.get("id"))
                    out["title"].append(title or "")
                    out["context"].append(paragraph.get("context"))
                    out["question"].append(qa.get("question"))
                    out["answers"].append(None if answers is None else {
                        "text": [a.get("text") for a in answers],
                        "answer_start": [a.get("answer_start") for a in answers]})
        return out

    return articles.map(flatten, batched=True, remove_columns=articles.column_names,
                        desc=f"flattening {path.name}")


def check_columns(rows, origin):
    missing = [c for c in ("id", "context", "question", "answers") if c not in rows.column_names]
    if missing:
        raise InputError(f"{origin}: records have no field {', '.join(missing)}; "
                         "expected id, title, context, question, answers{text, answer_start}")
    if "title" not in rows.column_names:
        rows = rows.add_column("title", [""] * len(rows))
    return rows.select_columns(["id", "title", "context", "question", "answers"])


def problem(row):
    """Why a record is unusable, as 'field: reason', or None when it is fine."""
    if not isinstance(row["id"], str) or not row["id"]:
        return "id: missing"
    for field in ("context", "question"):
        if not isinstance(row[field], str) or not row[field].strip():
            return f"{field}: missing or empty"
    answers = row["answers"]
    if not isinstance(answers, dict) or not isinstance(answers.get("text"), list):
        return "answers: none given"
    texts, starts = answers["text"], answers.get("answer_start") or []  # no texts: unanswerable (SQuAD v2.0)
    if len(texts) != len(starts):
        return "answers: text and answer_start differ in length"
    for text, start in zip(texts, starts):
        if not isinstance(text, str) or not text.strip():
            return "answers.text: empty"
        if not isinstance(start, int) or row["context"][start:start + len(text)] != text:
            return f"answers.answer_start: {text!r} is not at {start} in the context"
    return None
