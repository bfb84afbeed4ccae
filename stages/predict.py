"""Answer questions with a trained model, models/ or any folder the train stage wrote (on a GPU when there is one).

    python -m stages.predict --question "Who founded Zanstad?" --context "Zanstad was founded by ..."
    python -m stages.predict --file questions.jsonl > answers.jsonl
    python -m stages.predict --model path/to/model --free --question ... --context ...

--file reads one JSON object per line with `question` and `context` (other fields, such as id,
are kept) and writes each back with an `answer` added, in the same order. The model reads and answers
as it was trained to (the settings its config.json keeps: modeling.reading), extractively unless --free;
a closed-book model reads the question alone (no --context, no `context` field) and answers freely.
No params.yaml is needed, so it runs from any folder.
"""

import argparse
import json
from pathlib import Path

from stages import decoding, modeling, windows
from stages.errors import InputError, cli

MODEL = Path("models")


def read_questions(path, context=True):
    """The questions of a JSON-lines file, as {line number: row}; each with its context unless not `context`."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    rows = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}, line {n}: not JSON ({e.msg}); write one object per line") from None
        for field in ("question", "context") if context else ("question",):
            if not isinstance(row, dict) or not isinstance(row.get(field), str) or not row[field].strip():
                raise InputError(f"{path}, line {n}: field {field!r} must be a non-empty string")
        rows[n] = row
    if not rows:
        raise InputError(f"{path}: no questions in it")
    return rows


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--question")
    parser.add_argument("--context", help="the passage (not for a closed-book model)")
    parser.add_argument("--file", help="JSON lines with question and context")
    parser.add_argument("--model", type=Path, default=MODEL, help="model folder (default: models/)")
    parser.add_argument("--free", action="store_true", help="free generation instead of a span of the context")
    parser.add_argument("--batch-size", type=int, default=64, help="windows answered at once")
    args = parser.parse_args(argv)
    if bool(args.file) == bool(args.question or args.context):
        parser.error("give either --question (and --context), or --file")
    model, tokenizer = modeling.load_trained(args.model)
    reading = modeling.reading(model)
    if not args.file and bool(args.context) != reading["context"]:
        raise InputError("--context: this model answers from the question alone (trained closed-book): leave it out"
                         if args.context else "--context: this model reads the question with its context: give it")
    rows = (read_questions(args.file, reading["context"]) if args.file else
            {0: {"question": args.question, "context": args.context}})
    answers = decoding.answer_questions(model, tokenizer, [row["question"] for row in rows.values()],
                                       [row.get("context") for row in rows.values()], reading,
                                       {**reading, "batch_size": args.batch_size, "extractive": not args.free})
    for n, text in zip(rows, answers):
        if text is None:
            where = f"{args.file}, line {n}" if args.file else "--question"
            raise InputError(f"{where}: {windows.too_long(reading['max_source_length'])}, as this model was "
                             "trained: shorten the question")
    for row, text in zip(rows.values(), answers):
        print(json.dumps({**row, "answer": text}, ensure_ascii=False) if args.file else text)


if __name__ == "__main__":
    main()
