import pytest

from stages import metrics, spans, squad, vocabulary, windows
from tests.conftest import CONTEXT, QUESTION, SQUAD_SAMPLE, window


@pytest.mark.parametrize("answer", ["Kraków", "Łódź", "Poznań", "1830", "the poet of the piano",
                                    "\"the poet of the piano\"", "5½ francs", "Vienna (1830)"])
def test_an_answer_s_tokens_copy_back_verbatim_from_the_context(t5_tokenizer, answer):
    """Unicode the vocabulary lacks (<unk> tokens), answers right after "(" or a quote, NFKC's 5½."""
    w = window(t5_tokenizer)
    source = spans.context_tokens(w.input_ids, w.offsets)
    tokens = spans.answer_tokens(source, CONTEXT, CONTEXT.index(answer), answer)
    assert tokens is not None
    assert spans.copied_text(tokens, source, CONTEXT) == answer


def test_decoding_the_tokens_would_lose_what_copying_keeps(t5_tokenizer):
    w = window(t5_tokenizer)
    source = spans.context_tokens(w.input_ids, w.offsets)
    tokens = spans.answer_tokens(source, CONTEXT, CONTEXT.index("Łódź"), "Łódź")
    assert t5_tokenizer.unk_token_id in tokens  # Ł and ź are not in the vocabulary
    assert t5_tokenizer.decode(tokens, skip_special_tokens=True) != "Łódź"


def test_a_token_covering_more_than_the_answer_counts_only_when_scoring_ignores_the_rest(t5_tokenizer):
    context = "The sum rose in 1817 to $9.2 million."
    w = window(t5_tokenizer, context)
    source = spans.context_tokens(w.input_ids, w.offsets)
    assert spans.answer_tokens(source, context, context.index("817"), "7") is None  # a piece of "1817"
    tokens = spans.answer_tokens(source, context, context.index("9.2"), "9.2 million")
    assert spans.copied_text(tokens, source, context) in ("9.2 million", "9.2 million.")


def test_context_tokens_are_only_the_context_s(t5_tokenizer):
    w = window(t5_tokenizer)
    ids, covered = spans.context_tokens(w.input_ids, w.offsets)
    assert len(ids) == sum(start >= 0 for start, _ in w.offsets) < len(w.input_ids)
    assert covered[0, 0] == 0 and covered[-1, 1] == len(CONTEXT)  # from the context's first character to its last
    assert (covered[1:, 0] >= covered[:-1, 0]).all() and (covered[:, 0] <= covered[:, 1]).all()


def test_the_real_sample_s_answers_are_nearly_all_copyable(t5_tokenizer):
    """The extractive ceiling on real SQuAD text with a T5 SentencePiece tokenizer. What is left are
    gold answers that begin inside a word ("7" of "1817", "C" of "City")."""
    rows = squad.read_file(SQUAD_SAMPLE / "train.json")
    per_question = windows.split(t5_tokenizer, rows["question"], rows["context"], 512, 128)
    copied = 0
    for row, question_windows in zip(rows, per_question):
        text, start = row["answers"]["text"][0], row["answers"]["answer_start"][0]
        for w in question_windows:
            source = spans.context_tokens(w.input_ids, w.offsets)
            tokens = spans.answer_tokens(source, row["context"], start, text)
            if tokens is not None:
                copied += metrics.exact_match(spans.copied_text(tokens, source, row["context"]), text)
                break
    assert copied / len(rows) >= 0.995


def test_scratch_tokenizers_copy_alike():
    """The project's own BPE tokenizer goes through the same copying."""
    tokenizer = vocabulary.train_tokenizer([squad.model_input(QUESTION, CONTEXT)] * 20, vocab_size=200)
    w = window(tokenizer)
    source = spans.context_tokens(w.input_ids, w.offsets)
    tokens = spans.answer_tokens(source, CONTEXT, CONTEXT.index("1830"), "1830")
    assert spans.copied_text(tokens, source, CONTEXT) == "1830"
