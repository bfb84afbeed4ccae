"""A trivial baseline: answer with the first span in the context of the type the question asks for.

    python -m stages.baseline data/prepared/test.jsonl > baseline.json
    python -m stages.score data/prepared/test.jsonl baseline.json

The type comes from the question's first words (when -> a year, how many -> a number, who -> two
capitalised words, where / which -> one capitalised word); spans the question itself names are skipped.
"""

import argparse
import json
import re
import sys

from stages import squad
from stages.errors import InputError, cli

SPAN_OF_TYPE = [
    (r"\b(when|what year|which year)\b", r"\b\d{4}\b"),
    (r"\b(how many|how large|population)\b", r"\b\d{1,3}(?:,\d{3})+\b"),
    (r"\b(who|whom)\b", r"\b[A-Z][a-z]+ [A-Z][a-z]+\b"),
    (r".", r"\b[A-Z][a-z]+\b"),
]


def answer(question, context):
    for asks, span in SPAN_OF_TYPE:
        if re.search(asks, question, re.IGNORECASE):
            for match in re.finditer(span, context):
                if match.group() not in question:
                    return match.group()
    return ""


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="SQuAD v1.1 JSON, or flat .jsonl / .parquet")
    args = parser.parse_args(argv)
    rows = squad.read_file(args.dataset)
    for n, row in enumerate(rows, 1):
        if row["problem"] and row["problem"]["field"] in ("id", "context", "question"):  # what answering needs
            raise InputError(f"{args.dataset}: {squad.record_name(row['id'], n)}: "
                             f"{squad.Problem(**row['problem'])}; fix it to answer the question")
    json.dump({row["id"]: answer(row["question"], row["context"]) for row in rows}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
