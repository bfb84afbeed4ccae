import json
from pathlib import Path

import pytest
import yaml

from stages import evaluate

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("question, word", [
    ("When was Ada born?", "when"),
    ("In what year did Ada move to Paris?", "what"),
    ("By whom was Zanstad founded?", "whom"),
    ("Name the river.", "other"),
])
def test_question_word_is_the_first_wh_word(question, word):
    assert evaluate.question_word(question) == word


def test_answer_length_buckets_by_words_of_the_first_gold_answer():
    assert evaluate.answer_length(["1815", "in 1815"]) == "1 word"
    assert evaluate.answer_length(["Ada Lovelace"]) == "2 words"
    assert evaluate.answer_length(["the old stone bridge of Basel"]) == "5+ words"
    assert evaluate.answer_length([]) == "no answer"  # unanswerable (SQuAD v2.0)


def test_breakdown_averages_per_group_largest_first():
    rows = [{"q": "when", "exact_match": 100.0, "f1": 100.0}, {"q": "when", "exact_match": 0.0, "f1": 50.0},
            {"q": "who", "exact_match": 0.0, "f1": 0.0}]
    assert evaluate.breakdown(rows, lambda r: r["q"], "question_word") == [
        {"question_word": "when", "f1": 75.0, "exact_match": 50.0, "questions": 2},
        {"question_word": "who", "f1": 0.0, "exact_match": 0.0, "questions": 1},
    ]


@pytest.mark.parametrize("variant, context, named", [("closed_book", True, "another variant"),
                                                     ("extractive", False, "closed_book")])
def test_data_tokenized_for_another_variant_is_refused_before_the_model_is_loaded(
        tmp_path, monkeypatch, capsys, variant, context, named):
    monkeypatch.chdir(tmp_path)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["task"]["variant"] = variant
    Path("params.yaml").write_text(yaml.safe_dump(p))
    evaluate.READING.parent.mkdir(parents=True)
    evaluate.READING.write_text(json.dumps({"context": context}))
    with pytest.raises(SystemExit) as e:
        evaluate.main()
    assert e.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: task.variant = {variant!r}, but data/tokenized/ was tokenized for {named}: run `dvc repro`")
