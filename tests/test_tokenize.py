import pytest

from stages import modeling, squad
from stages.tokenize import encode, fingerprint, one_row_per_answer

CONTEXT = "Ada Lovelace was born in London in 1815. She wrote the first program."


@pytest.fixture(scope="module")
def tokenizer():
    return modeling.train_tokenizer([squad.model_input("Where was Ada born?", CONTEXT)] * 20, vocab_size=200)


def batch(answer):
    return {"id": ["q1"], "question": ["Where was Ada born?"], "context": [CONTEXT],
            "answers": [{"text": [answer, "x"], "answer_start": [CONTEXT.find(answer), 0]}]}


def test_input_is_question_then_context_and_target_is_the_first_answer(tokenizer):
    out = encode(batch("London"), tokenizer, max_source_length=512, max_target_length=32)
    assert tokenizer.decode(out["input_ids"][0], skip_special_tokens=True) == squad.model_input(
        "Where was Ada born?", CONTEXT)
    assert tokenizer.decode(out["labels"][0], skip_special_tokens=True) == "London"
    assert out["input_ids"][0][-1] == tokenizer.eos_token_id
    assert (out["source_truncated"], out["answer_cut"], out["target_truncated"]) == ([False], [False], [False])


def test_truncation_is_counted_where_it_cuts(tokenizer):
    full = len(encode(batch("program"), tokenizer, 512, 32)["input_ids"][0])
    out = encode(batch("program"), tokenizer, max_source_length=full - 3, max_target_length=2)
    assert len(out["input_ids"][0]) == full - 3
    assert out["source_truncated"] == [True]
    assert out["answer_cut"] == [True]  # "program" sits at the end of the context
    early = encode(batch("London"), tokenizer, max_source_length=full - 3, max_target_length=2)
    assert early["source_truncated"] == [True] and early["answer_cut"] == [False]
    assert early["target_truncated"] == [len(tokenizer("London")["input_ids"]) > 2]
    long_answer = encode(batch("first program"), tokenizer, 512, max_target_length=2)
    assert long_answer["target_truncated"] == [True]
    assert len(long_answer["labels"][0]) == 2


def test_answers_the_tokenizer_cannot_spell_are_counted():
    context = "Ada wrote {x} in Zürich in 1843."
    tok = modeling.train_tokenizer([squad.model_input("What did Ada write?", "Ada wrote x in Zurich in 1843.")] * 20,
                                   vocab_size=200)  # never saw "{", "}" or "ü"
    rows = {"id": ["q1", "q2", "q3"], "question": ["What?", "Where?", "When?"], "context": [context] * 3,
            "answers": [{"text": ["{x}", "x"], "answer_start": [10, 11]},  # a gold without braces survives
                        {"text": ["Zürich"], "answer_start": [17]},
                        {"text": ["1843"], "answer_start": [27]}]}
    out = encode(rows, tok, 512, 32)
    assert out["golds_not_spelled"] == [1, 1, 0]
    assert out["reachable"] == [True, False, True]  # normalised "{x}" is "x": still an exact match


def test_all_answers_gives_one_row_per_distinct_answer():
    rows = {"id": ["q1", "q2"], "question": ["A?", "B?"], "context": ["ctx a", "ctx b"],
            "answers": [{"text": ["x", "x", "y"], "answer_start": [0, 0, 4]}, {"text": ["z"], "answer_start": [2]}]}
    out = one_row_per_answer(rows)
    assert out["id"] == ["q1", "q1", "q2"] and out["question"] == ["A?", "A?", "B?"]
    assert out["answers"] == [{"text": ["x"], "answer_start": [0]}, {"text": ["y"], "answer_start": [4]},
                              {"text": ["z"], "answer_start": [2]}]


def test_the_fingerprint_names_the_content(tmp_path, tokenizer):
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": "q1"}\n')
    settings = {"max_source_length": 512, "max_target_length": 32, "train_answers": "first"}
    assert fingerprint(path, tokenizer, settings) == fingerprint(path, tokenizer, dict(settings))
    assert fingerprint(path, tokenizer, settings) != fingerprint(path, tokenizer, {**settings, "train_answers": "all"})
    before = fingerprint(path, tokenizer, settings)
    path.write_text('{"id": "q2"}\n')
    assert fingerprint(path, tokenizer, settings) != before
