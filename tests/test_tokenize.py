import pytest

from stages import modeling, squad
from stages.tokenize import encode

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
