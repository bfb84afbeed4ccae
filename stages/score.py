"""Score any predictions file, with the official SQuAD evaluation scripts' interface (v1.1 and v2.0).

    python -m stages.score DATASET.json PREDICTIONS.json

DATASET is SQuAD v1.1 or v2.0 JSON (or a flat .jsonl / .parquet file), PREDICTIONS a JSON object
{question id: answer text}, or the evaluate stage's data/predictions/test.jsonl; "" answers an unanswerable question (v2.0: no gold answers). Prints the
evaluate stage's metrics as JSON (with v2.0 data, has_answer and no_answer too). Every question in
DATASET counts; a missing prediction scores 0 and is counted; unknown ids are ignored.
"""

import argparse
import json
import sys

from stages import metrics, squad
from stages.errors import InputError, cli


PIPELINE_ROWS = "JSON lines with id and prediction (data/predictions/*.jsonl)"


def read_predictions(path):
    """{question id: answer} from a JSON object, as the official scripts read, or from the evaluate stage's
    JSON lines (.jsonl), a row a question."""
    try:
        with open(path, encoding="utf-8") as f:
            if str(path).endswith(".jsonl"):
                return dict(prediction_row(line, n, path) for n, line in enumerate(f, 1) if line.strip())
            predictions = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(predictions, dict) or not all(isinstance(v, str) for v in predictions.values()):
        raise InputError(f"{path}: expected a JSON object mapping question id to answer text, or {PIPELINE_ROWS}")
    return predictions


def prediction_row(line, n, path):
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}, line {n}: not valid JSON ({e.msg}, column {e.colno})") from None
    if not (isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("prediction"), str)):
        raise InputError(f"{path}, line {n}: expected an object with id and prediction "
                         "(data/predictions/*.jsonl)")
    return row["id"], row["prediction"]


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="SQuAD v1.1 or v2.0 JSON file")
    parser.add_argument("predictions", help="JSON object: question id -> answer text, or JSON lines with id and "
                                            "prediction")
    args = parser.parse_args(argv)
    rows = squad.read_file(args.dataset)
    golds = {}
    for n, row in enumerate(rows, 1):
        # like the official script, score against ids and answer texts alone (no answer_start needed)
        if row["id"] is None or row["answers"] is None:
            raise InputError(f"{args.dataset}: {squad.record_name(row['id'], n)}: "
                             f"{squad.Problem(**row['problem'])}; scoring needs each question's id and answer texts")
        golds[row["id"]] = row["answers"]["text"]
    summary, _ = metrics.score(golds, read_predictions(args.predictions))
    json.dump(summary, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
