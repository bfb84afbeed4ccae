import json

import pytest

from stages import baseline


def test_the_baseline_answers_with_the_first_span_of_the_asked_type_not_named_in_the_question():
    context = "Ada Byron met Charles Babbage in London in 1833. Ada Byron was born in 1815."
    assert baseline.answer("When did Ada Byron meet Charles Babbage?", context) == "1833"
    assert baseline.answer("Who did Ada Byron meet?", context) == "Charles Babbage"
    assert baseline.answer("Where did they meet?", context) == "Ada"  # the first capitalised word: a poor baseline
    assert baseline.answer("How many?", context) == "Ada"  # no number: it falls back to a capitalised word


def test_a_question_it_cannot_read_names_its_file_id_and_field(capsys, write_json, small_squad):
    small_squad["data"][0]["paragraphs"][0]["qas"][1]["question"] = None
    dataset = write_json("dev.json", small_squad)
    with pytest.raises(SystemExit) as e:
        baseline.main([str(dataset)])
    assert e.value.code == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.strip() == f"error: {dataset}: id 'q2': question: missing; fix it to answer the question"
    small_squad["data"][0]["paragraphs"][0]["qas"][1]["question"] = "When?"
    baseline.main([str(write_json("dev.json", small_squad))])
    assert json.loads(capsys.readouterr().out) == {"q1": "Lovelace", "q2": "1815", "q3": "The"}
