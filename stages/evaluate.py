"""Stage 4: answer every test question with the trained model and score the answers.

Reads params evaluate.* and train.report_to (W&B logging); writes metrics/eval.json (SQuAD EM / F1 /
precision / recall and ROUGE, 0-100, max over gold answers), data/predictions/test.jsonl (one row per
question) and, for error analysis, EM and F1 by question word and by answer length in metrics/breakdown/.
"""

import json
from collections import Counter, defaultdict
from pathlib import Path

import datasets

from stages import decoding, metrics, modeling, params, squad, tracking
from stages.errors import InputError, cli
from stages.outputs import staged, write_json, write_jsonl

TEST_ROWS = Path("data/prepared/test.jsonl")
TEST_INPUTS = Path("data/tokenized/test")
READING = Path("data/tokenized/reading.json")  # whether the inputs hold the context
MODEL = Path("models")
METRICS_FILE = Path("metrics/eval.json")
PREDICTIONS = Path("data/predictions")
BREAKDOWNS = Path("metrics/breakdown")  # error-analysis plots (dvc.yaml: plots)
QUESTION_WORDS = ("what", "when", "where", "which", "who", "whom", "whose", "why", "how")


def question_word(question):
    words = question.lower().replace("?", " ").split()
    return next((w for w in words if w in QUESTION_WORDS), "other")


def answer_length(answers):
    if not answers:
        return "no answer"  # SQuAD v2.0's unanswerable questions
    n = len(answers[0].split())
    return "1 word" if n == 1 else f"{n} words" if n < 5 else "5+ words"


def breakdown(rows, key, name):
    """Mean EM and F1 per group of questions, largest group first."""
    groups = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return [{name: group, "f1": round(sum(r["f1"] for r in members) / len(members), 2),
             "exact_match": round(sum(r["exact_match"] for r in members) / len(members), 2),
             "questions": len(members)}
            for group, members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))]


def rounded(value, digits):
    """Floats rounded, in nested dicts too (has_answer, no_answer, long_contexts)."""
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    return round(value, digits) if isinstance(value, float) else value


def long_contexts(ids, chosen, per_question):
    """EM and F1 on the questions whose context was read as several windows, and how many of their
    answers differ from the first window's (what plain truncation would have answered)."""
    windowed = [qid for qid, n in Counter(ids).items() if n > 1]
    if not windowed:
        return {"questions": 0}
    return {"questions": len(windowed),
            "exact_match": sum(per_question[q]["exact_match"] for q in windowed) / len(windowed),
            "f1": sum(per_question[q]["f1"] for q in windowed) / len(windowed),
            "answers_changed_by_windowing": sum(chosen[q][0] != chosen[q][1] for q in windowed)}


@cli(outputs=[METRICS_FILE, BREAKDOWNS])
def main():
    p = params.load()
    hp, variant = p["evaluate"], p["task"]["variant"]
    context = json.loads(READING.read_text())["context"]
    if context != (variant != "closed_book"):
        raise InputError(f"task.variant = {variant!r}, but {TEST_INPUTS.parent}/ was tokenized for "
                         f"{'another variant' if context else 'closed_book'}: run `dvc repro`")
    model, tokenizer = modeling.load_trained(MODEL)
    # as plain lists, read once: a Dataset's columns are read row by row each time
    test = datasets.load_from_disk(str(TEST_INPUTS)).select_columns(["id", "input_ids", "offsets"]).to_dict()
    questions = squad.read_prepared(TEST_ROWS).to_list()

    contexts = {row["id"]: row["context"] for row in questions}
    chosen = decoding.answer(model, tokenizer, test["id"], list(zip(test["input_ids"], test["offsets"])),
                             [contexts[qid] for qid in test["id"]], hp["batch_size"], hp["max_new_tokens"],
                             variant == "extractive")
    predictions = {qid: answer for qid, (answer, _) in chosen.items()}
    golds = {row["id"]: row["answers"]["text"] for row in questions}
    summary, per_question = metrics.score(golds, predictions)
    summary["long_contexts"] = long_contexts(test["id"], chosen, per_question)

    rows = [{
        "id": row["id"], "question": row["question"], "answers": row["answers"]["text"],
        "prediction": predictions.get(row["id"], ""),
        "exact_match": per_question[row["id"]]["exact_match"], "f1": per_question[row["id"]]["f1"],
    } for row in questions]
    # each output folder is filled aside and moved into place whole; the metrics come last
    with staged(PREDICTIONS) as tmp:
        write_jsonl(tmp / "test.jsonl", rows)
    with staged(BREAKDOWNS) as tmp:
        write_json(tmp / "question_word.json",
                   breakdown(rows, lambda r: question_word(r["question"]), "question_word"))
        write_json(tmp / "answer_length.json",
                   breakdown(rows, lambda r: answer_length(r["answers"]), "answer_length"))
    write_json(METRICS_FILE, rounded(summary, 4))
    print(rounded(summary, 2))
    if "wandb" in p["train"]["report_to"]:
        tracking.log_evaluation(summary, p)


if __name__ == "__main__":
    main()
