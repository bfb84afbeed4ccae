import json

import pytest

from stages import score
from stages.errors import InputError
from tests.conftest import squad_v2


def run(capsys, *args):
    score.main(list(map(str, args)))
    return json.loads(capsys.readouterr().out)


def test_scores_every_question_and_counts_missing_ones(capsys, write_json, small_squad):
    dataset = write_json("dev.json", small_squad)
    predictions = write_json("pred.json", {"q1": "london", "q2": "in 1815", "unknown": "ignored"})
    result = run(capsys, dataset, predictions)
    assert result["questions"] == 3
    assert result["missing_predictions"] == 1
    # q1 exact (100), q2 F1 = 2/3 ("in 1815" vs "1815"), q3 missing (0)
    assert result["exact_match"] == pytest.approx(100 / 3)
    assert result["f1"] == pytest.approx((100 + 200 / 3) / 3)
    assert set(result) >= {"precision", "recall", "rouge1", "rouge2", "rougeL", "rougeLsum"}


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[\"London\"]", "expected a JSON object mapping question id to answer text"),
])
def test_bad_predictions_file(capsys, tmp_path, write_json, small_squad, content, message):
    dataset = write_json("dev.json", small_squad)
    (tmp_path / "pred.json").write_text(content)
    with pytest.raises(SystemExit) as e:
        score.main([str(dataset), str(tmp_path / "pred.json")])
    assert e.value.code == 1
    assert message in capsys.readouterr().err


def test_a_v2_file_scores_the_empty_answer_right_for_unanswerable_questions(capsys, write_json):
    dataset = write_json("dev-v2.json", squad_v2("Ada was born in London in 1815.",
                                                 [("a1", "Where was Ada born?", "London")],
                                                 [("n1", "Where did Ada die?"), ("n2", "Who was Ada's cat?")]))
    predictions = write_json("pred.json", {"a1": "London", "n1": "", "n2": "London"})
    result = run(capsys, dataset, predictions)
    assert result["questions"] == 3 and result["exact_match"] == pytest.approx(200 / 3)
    assert result["has_answer"] == {"exact_match": 100.0, "f1": 100.0, "questions": 1}
    assert result["no_answer"] == {"exact_match": 50.0, "f1": 50.0, "questions": 2}


def test_gold_answers_need_no_answer_start_as_in_the_official_script(capsys, write_json, small_squad):
    for qa in small_squad["data"][0]["paragraphs"][0]["qas"]:
        del qa["answers"][0]["answer_start"]
    small_squad["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 1.5
    result = run(capsys, write_json("dev.json", small_squad), write_json("pred.json", {"q1": "London", "q3": "Rhine"}))
    assert result["exact_match"] == pytest.approx(200 / 3) and result["missing_predictions"] == 1


def test_a_question_without_answer_texts_names_its_file_and_id(capsys, write_json, small_squad):
    small_squad["data"][1]["paragraphs"][0]["qas"][0]["answers"] = [{"answer_start": 4}]
    dataset = write_json("dev.json", small_squad)
    with pytest.raises(SystemExit) as e:
        score.main([str(dataset), str(write_json("pred.json", {}))])
    assert e.value.code == 1
    assert capsys.readouterr().err.strip() == (f"error: {dataset}: id 'q3': answers.text: expected a string, got null; "
                                               "scoring needs each question's id and answer texts")


def test_the_pipeline_s_own_predictions_file_is_read_as_it_is(capsys, tmp_path, write_json, small_squad):
    """data/predictions/test.jsonl: a row a question, with id and prediction among its fields."""
    rows = [{"id": "q1", "question": "Where?", "prediction": "London", "exact_match": 100.0},
            {"id": "q2", "question": "When?", "prediction": "1815", "exact_match": 100.0}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run(capsys, write_json("dev.json", small_squad), tmp_path / "test.jsonl")
    assert result["exact_match"] == pytest.approx(200 / 3) and result["missing_predictions"] == 1


@pytest.mark.parametrize("name, content, message", [
    ("pred.jsonl", '{"id": "q1", "answer": "London"}\n', r"pred\.jsonl, line 1: expected an object with id and "
                                                          r"prediction \(data/predictions/\*\.jsonl\)"),
    ("pred.jsonl", '{"id": "q1", "prediction": "London"}\n{oops\n', r"pred\.jsonl, line 2: not valid JSON"),
    ("pred.json", '["London"]', r"pred\.json: expected a JSON object mapping question id to answer text, or JSON "
                                r"lines with id and prediction \(data/predictions/\*\.jsonl\)"),
])
def test_a_predictions_file_of_another_shape_says_what_is_expected(tmp_path, write_json, small_squad, name, content,
                                                                   message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=message):
        score.read_predictions(tmp_path / name)
