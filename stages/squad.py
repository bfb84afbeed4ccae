"""SQuAD-format data: load a split from the Hub or a local folder, check records, build model inputs.

Every source becomes the same flat rows as the Hub's `squad`:
id, title, context, question, answers {text: [...], answer_start: [...]}; SQuAD v2.0's
unanswerable questions (`squad_v2`, is_impossible) have empty answer lists. Each row also carries its
`problem` {field, reason}, null for a usable record.
"""

import json
from pathlib import Path
from typing import NamedTuple

import datasets

from stages import hub
from stages.errors import InputError
from stages.params import SPLIT_SPEC

SPLITS = ("train", "validation", "test")
FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def model_input(question, context):
    """The model's input; the question alone (closed book) where context is None."""
    return f"question: {question}" if context is None else f"question: {question} context: {context}"


def load_split(source, spec, shuffle_seed=None, read=None, param=None):
    """Rows of `spec` (Hugging Face slice syntax, e.g. train[:20000]) from `source`, where they came from
    and which rows of it they are (begin, end).
    With a shuffle_seed the slice is taken from the split shuffled with that seed: slices of one split
    stay disjoint, but hold a random sample instead of consecutive (for SQuAD: whole-article) rows.
    A local file is read with `read` (default read_file), e.g. a cached read_file for slices of one file.
    `param` (data.splits.train) names the slice in messages."""
    match = SPLIT_SPEC.match(spec)
    if not match:
        raise InputError(f"split {spec!r} is not of the form name[start:stop], e.g. train[:20000]")
    name, start, stop = match.groups()
    folder = hub.local_path(source, "data.source")
    if folder:
        path = split_file(folder, name)
        rows, origin = (read or read_file)(path), str(path)
    else:
        hub.require_hub(source, "data.source", "point data.source at a folder holding <split>.json files")
        try:
            rows = datasets.load_dataset(source, split=name)
        except Exception as e:  # the Hub's errors have many types; all mean "can't load this id"
            raise InputError(f"data.source = {source!r}: cannot load split {name!r} from the Hub ({e})") from None
        origin = f"{source}:{name}"
        rows = check_columns(rows, origin).map(problem_column, features=FEATURES, desc="checking records")
    begin, end = slice_bounds(start, stop, len(rows), spec, origin, param)
    if shuffle_seed is not None:
        rows = rows.shuffle(seed=shuffle_seed)
    return rows.select(range(begin, end)), origin, (begin, end)


def read_prepared(path):
    """A split the prepare stage wrote (data/prepared/<split>.jsonl) in SQuAD's declared types, never
    inferred: a split whose answers all look like dates would otherwise load them as timestamps."""
    with open(path, encoding="utf-8") as f:  # not datasets' JSON reader: it infers types, then casts
        return datasets.Dataset.from_list([json.loads(line) for line in f], features=PREPARED_FEATURES)


def check_disjoint(slices):
    """slices: {param name: (origin, (begin, end))}. Two slices of one split must not share rows: a
    validation or test question seen in training would make its metrics meaningless. (With data.shuffle
    the rows are positions in the shuffled split.)"""
    problems = [f"{a} and {b} share rows {max(ra[0], rb[0])}-{min(ra[1], rb[1]) - 1} of {oa}"
                for i, (a, (oa, ra)) in enumerate(slices.items()) for b, (ob, rb) in list(slices.items())[i + 1:]
                if oa == ob and max(ra[0], rb[0]) < min(ra[1], rb[1])]
    if problems:
        raise InputError("; ".join(problems) + ": make the slices disjoint")


def slice_bounds(start, stop, n, spec, origin, param=None):
    """Resolve a slice like the Hub does (negative from the end, % rounded), but never shrink it silently."""
    named = f"{param} = {spec!r}" if param else f"split {spec!r}"

    def resolve(bound, default):
        if bound is None:
            return default
        if bound.endswith("%"):
            value = round(int(bound[:-1]) * n / 100)
        else:
            value = int(bound)
        if abs(value) > n:
            begin = start if bound is stop and start and start.isdigit() and int(start) < n else ""
            within = f"{spec[:spec.index('[')]}[{begin}:{n}]"
            raise InputError(f"{named} asks for row {value}, but {origin} has only {n} rows"
                             + (f": set {param} within them, e.g. {within}" if param else ""))
        return value + n if value < 0 else value

    begin, end = resolve(start, 0), resolve(stop, n)
    if begin >= end:
        raise InputError(f"{named} selects no rows of {origin} ({n} rows)")
    return begin, end


OFFICIAL_NAMES = {"train": ["train-v1.1", "train-v2.0"], "validation": ["dev-v1.1", "dev-v2.0"]}  # SQuAD's own


def split_file(folder, name):
    """The file of split `name` in a folder: <name>.json / .jsonl / .parquet, or SQuAD's official names
    (train-v1.1.json; dev-v1.1.json for validation; v2.0 alike)."""
    found = [folder / f"{stem}{ext}" for stem in [name, *OFFICIAL_NAMES.get(name, [])] for ext in FILE_FORMATS
             if (folder / f"{stem}{ext}").is_file()]
    if not found:
        official = "".join(f", nor {stem}.json" for stem in OFFICIAL_NAMES.get(name, []))
        raise InputError(f"{folder}: no {name}.json, {name}.jsonl or {name}.parquet{official} for split {name!r}")
    if len(found) > 1:
        raise InputError(f"{folder}: split {name!r} is ambiguous ({', '.join(p.name for p in found)}); keep one")
    return found[0]


FEATURES = datasets.Features({
    "id": datasets.Value("string"), "title": datasets.Value("string"), "context": datasets.Value("string"),
    "question": datasets.Value("string"),
    "answers": {"text": datasets.List(datasets.Value("string")), "answer_start": datasets.List(datasets.Value("int64"))},
    "problem": {"field": datasets.Value("string"), "reason": datasets.Value("string")},  # null: a usable record
})
PREPARED_FEATURES = datasets.Features({name: kind for name, kind in FEATURES.items() if name != "problem"})
CHUNK = 10_000  # records turned into Arrow at a time: memory stays bounded for a large file


class Problem(NamedTuple):
    """Why a record is unusable: the field and what is wrong with it."""
    field: str
    reason: str

    def __str__(self):
        return f"{self.field}: {self.reason}"


def read_file(path):
    """A SQuAD v1.1 / v2.0 .json (nested articles) or a flat .jsonl/.parquet file as flat rows, each
    with its `problem` (None for a usable record). The JSON is read here rather than by Arrow, whose
    type inference stops at the first field of another type: such a record is kept, its bad fields
    empty, and its problem says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".parquet":
        rows = check_columns(datasets.load_dataset("parquet", data_files=str(path), split="train"), str(path))
        try:
            return rows.map(problem_column, features=FEATURES, desc=f"checking {path.name}")
        except (TypeError, ValueError) as e:  # a column of another type: Parquet types whole columns
            raise InputError(f"{path}: columns of other types than SQuAD's ({str(e).splitlines()[0][:200]}); "
                             "expected id, title, context, question: strings, answers: "
                             "{text: list of strings, answer_start: list of integers}") from None
    records = flatten_articles(read_json(path), path) if path.suffix == ".json" else read_json_lines(path)
    parts, chunk = [], []
    for record in records:
        chunk.append(typed(record))
        if len(chunk) == CHUNK:
            parts.append(datasets.Dataset.from_list(chunk, features=FEATURES))
            chunk = []
    if chunk:
        parts.append(datasets.Dataset.from_list(chunk, features=FEATURES))
    if not parts:
        raise InputError(f"{path}: no questions in it (no paragraph has qas); expected SQuAD v1.1 / v2.0 JSON, "
                         "{\"data\": [{\"title\", \"paragraphs\": [{\"context\", \"qas\": [...]}]}]}")
    return datasets.concatenate_datasets(parts)


def read_json(path):
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise InputError(f"{path}: the file is empty; expected SQuAD v1.1 / v2.0 JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}, line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None


class UnreadableLine(dict):
    """A JSON line that is no JSON object: a record with no fields, whose problem is `reason`, so that
    data.on_invalid: drop skips it as it skips a record with a bad field."""

    def __init__(self, reason):
        super().__init__()
        self.reason = reason


def read_json_lines(path):
    """Flat records, one JSON object a line."""
    checked, empty = False, True
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            empty = False
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield UnreadableLine(f"line {n} is not valid JSON ({e.msg}, column {e.colno})")
                continue
            if not isinstance(record, dict):
                yield UnreadableLine(f"line {n}: expected a JSON object, got {described(record)}")
                continue
            if not checked:
                check_fields(record, path)
                checked = True
            yield record
    if empty:
        raise InputError(f"{path}: the file is empty; expected one SQuAD record a line")
    if not checked:
        raise InputError(f"{path}: no line of it is a JSON object; expected one SQuAD record a line")


def flatten_articles(document, path):
    """The flat records of nested SQuAD JSON: {"data": [{"title", "paragraphs": [{"context", "qas"}]}]}."""
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list) or not all(isinstance(a, dict) and "paragraphs" in a for a in articles):
        raise InputError(f"{path}: expected SQuAD v1.1 / v2.0 JSON, {{\"data\": [{{\"title\", \"paragraphs\": [...]}}]}}")
    for article in articles:
        for paragraph in article["paragraphs"] if isinstance(article["paragraphs"], list) else []:
            for qa in (paragraph.get("qas") or []) if isinstance(paragraph, dict) else []:
                qa = qa if isinstance(qa, dict) else {}
                answers = qa.get("answers")
                if isinstance(answers, list) and all(isinstance(a, dict) for a in answers):
                    answers = {"text": [a.get("text") for a in answers],
                               "answer_start": [a.get("answer_start") for a in answers]}
                yield {"id": qa.get("id"), "title": article.get("title"), "context": paragraph.get("context"),
                       "question": qa.get("question"), "answers": answers}


def typed(record):
    """A raw record in FEATURES' types: a field of another type is left empty (its problem says so)."""
    answers = record.get("answers")
    if isinstance(answers, dict) and is_list_of(answers.get("text"), str):  # what scoring needs
        starts = answers.get("answer_start")
        answers = {"text": answers["text"], "answer_start": starts if is_list_of(starts, int) else None}
    else:
        answers = None
    fields = {name: value if isinstance(value := record.get(name), str) else None
              for name in ("id", "title", "context", "question")}
    return {**fields, "title": fields["title"] or "", "answers": answers, **problem_column(record)}


def problem_column(row):
    found = problem(row)
    return {"problem": found._asdict() if found else None}


def is_list_of(value, kind):
    return isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def check_fields(names, origin):
    missing = [c for c in ("id", "context", "question", "answers") if c not in names]
    if missing:
        raise InputError(f"{origin}: records have no field {', '.join(missing)}; "
                         "expected id, title, context, question, answers{text, answer_start}")


def check_columns(rows, origin):
    check_fields(rows.column_names, origin)
    if "title" not in rows.column_names:
        rows = rows.add_column("title", [""] * len(rows))
    return rows.select_columns(["id", "title", "context", "question", "answers"])


def record_name(record_id, n):
    """How messages name a record: by its id, or by its place where it has none."""
    return f"id {record_id!r}" if record_id else f"record {n}"


def described(value):
    """A value's JSON type, with the value when short: for messages."""
    kind = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
    shown = json.dumps(value, ensure_ascii=False)
    return f"{kind} ({shown})" if value is not None and len(shown) <= 40 else kind


def problem(row):
    """Why a record (raw JSON values, or a row of typed columns) is unusable, as a Problem, or None."""
    if isinstance(row, UnreadableLine):
        return Problem("record", row.reason)
    if row.get("id") is None or row.get("id") == "":
        return Problem("id", "missing")
    if not isinstance(row["id"], str):
        return Problem("id", f"expected a string, got {described(row['id'])}")
    for field in ("context", "question"):
        if not isinstance(row.get(field), str):
            return Problem(field, "missing" if row.get(field) is None else f"expected a string, got {described(row[field])}")
        if not row[field].strip():
            return Problem(field, "empty")
    answers = row.get("answers")
    if answers is None:
        return Problem("answers", "missing")
    if not isinstance(answers, dict):
        return Problem("answers", "expected a list of {text, answer_start} objects (flat files: "
                                  f"{{text: [...], answer_start: [...]}}), got {described(answers)}")
    texts, starts = answers.get("text"), answers.get("answer_start")  # no texts: unanswerable (SQuAD v2.0)
    for field, values in (("text", texts), ("answer_start", starts)):
        if not isinstance(values, list):
            return Problem(f"answers.{field}", f"expected a list, got {described(values)}")
    if len(texts) != len(starts):
        return Problem("answers", "text and answer_start differ in length")
    for text, start in zip(texts, starts):
        if not isinstance(text, str):
            return Problem("answers.text", f"expected a string, got {described(text)}")
        if not text.strip():
            return Problem("answers.text", "empty")
        if not isinstance(start, int) or isinstance(start, bool):
            return Problem("answers.answer_start",
                           f"expected a whole number (a character index), got {described(start)}")
        if start < 0:
            return Problem("answers.answer_start", f"{start} is negative; expected the index of the answer's first "
                                                   "character in the context")
        if row["context"][start:start + len(text)] != text:
            return Problem("answers.answer_start", f"{text!r} is not at {start} in the context")
    return None
