"""Stage 4: answer every test question with the trained model and score the answers.

Reads params evaluate.*; writes metrics/eval.json (SQuAD EM / F1 / precision / recall and ROUGE,
0-100, max over gold answers) and data/predictions/test.jsonl (one row per question).
"""

from pathlib import Path

import datasets
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from stages import metrics, modeling, params
from stages.errors import cli
from stages.outputs import write_json, write_jsonl

TEST_ROWS = Path("data/prepared/test.jsonl")
TEST_INPUTS = Path("data/tokenized/test")
MODEL = Path("models")
METRICS_FILE = Path("metrics/eval.json")
PREDICTIONS = Path("data/predictions/test.jsonl")


@cli
def main():
    hp = params.load()["evaluate"]
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForSeq2SeqLM.from_pretrained(MODEL, use_safetensors=True).to(modeling.device())
    test = datasets.load_from_disk(str(TEST_INPUTS))
    questions = datasets.load_dataset("json", data_files=str(TEST_ROWS), split="train")

    answers = modeling.generate(model, tokenizer, test["input_ids"], hp["batch_size"], hp["max_new_tokens"])
    predictions = dict(zip(test["id"], answers))
    golds = {row["id"]: row["answers"]["text"] for row in questions}
    summary, per_question = metrics.score(golds, predictions)

    write_jsonl(PREDICTIONS, ({
        "id": row["id"], "question": row["question"], "answers": row["answers"]["text"],
        "prediction": predictions.get(row["id"], ""),
        "exact_match": per_question[row["id"]]["exact_match"], "f1": per_question[row["id"]]["f1"],
    } for row in questions))
    write_json(METRICS_FILE, {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()})
    print({k: round(v, 2) for k, v in summary.items()})


if __name__ == "__main__":
    main()
