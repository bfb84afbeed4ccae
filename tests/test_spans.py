import pytest

from stages import metrics, spans, squad, vocabulary, windows
from tests.conftest import CONTEXT, QUESTION, SQUAD_SAMPLE, window


def copied(tokenizer, context, answer, at=None):
    """What copying the tokens of `answer` (at character `at`, default its first occurrence) gives back."""
    w = window(tokenizer, context)
    source = spans.context_tokens(w.input_ids, w.offsets)
    span = spans.answer_span(source, context, context.index(answer) if at is None else at, answer)
    return span and spans.span_text(source, context, *span)


@pytest.mark.parametrize("answer", ["Kraków", "Łódź", "Poznań", "1830", "the poet of the piano",
                                    "\"the poet of the piano\"", "5½ francs", "Vienna (1830)"])
def test_an_answer_s_tokens_copy_back_verbatim_from_the_context(t5_tokenizer, answer):
    """Unicode t5-small's vocabulary lacks (<unk> tokens), answers right after "(" or a quote, NFKC's 5½."""
    assert copied(t5_tokenizer, CONTEXT, answer) == answer


CURLY = "The band ‘Abbas toured with the Beatles’ crew, played rock ’n’ roll and “the blues” in Sa‘dah."


@pytest.mark.parametrize("answer", ["‘Abbas", "Beatles’", "Beatles’ crew", "rock ’n’ roll", "“the blues”",
                                    "the blues", "Sa‘dah", "’n’"])
def test_curly_quotes_and_apostrophes_copy_as_the_context_writes_them(t5_tokenizer, answer):
    """SQuAD's normalisation keeps non-ASCII marks, so an answer must keep those of its gold, inside and
    at its ends, and leave out those around it."""
    assert copied(t5_tokenizer, CURLY, answer) == answer


def test_a_bracket_a_token_joins_to_the_answer_is_left_out_a_mark_copied_on_purpose_stays(t5_tokenizer):
    context = "Chopin left (1830) and met the Tajiks\". Then"
    w = window(t5_tokenizer, context)
    source = spans.context_tokens(w.input_ids, w.offsets)
    tokens = t5_tokenizer.convert_ids_to_tokens(source[0].tolist())
    assert "▁(18" in tokens and '".' in tokens  # t5-small joins these marks to words and to each other
    first = tokens.index("▁(18")
    assert spans.span_text(source, context, first, 2) == "1830"
    assert spans.span_text(source, context, first, 3) == "(1830)"
    assert copied(t5_tokenizer, context, 'Tajiks"') == 'Tajiks"'  # the token '".': its full stop is left out


def test_two_names_of_the_same_tokens_copy_each_its_own_characters(t5_tokenizer):
    """Every run of characters t5-small lacks is one <unk>, and NFKC reads "ﬁsh" as "fish": the ids
    of such an answer stand at several places, and each place copies its own characters."""
    for context, names in (("Ala went to 東京 and Ola went to 大阪 by train.", ["東京", "大阪"]),
                           ("Ala caught a ﬁsh and Ola a fish.", ["ﬁsh", "fish"])):
        w = window(t5_tokenizer, context)
        source = spans.context_tokens(w.input_ids, w.offsets)
        first, count = spans.answer_span(source, context, context.index(names[1]), names[1])
        places = spans.occurrences(source[0][first:first + count], source)
        assert len(places) == 2 and places[1] == first
        assert [spans.span_text(source, context, place, count) for place in places] == names


def test_decoding_the_tokens_would_lose_what_copying_keeps(t5_tokenizer):
    w = window(t5_tokenizer)
    source = spans.context_tokens(w.input_ids, w.offsets)
    first, count = spans.answer_span(source, CONTEXT, CONTEXT.index("Łódź"), "Łódź")
    tokens = source[0][first:first + count].tolist()
    assert t5_tokenizer.unk_token_id in tokens  # Ł and ź are not in the vocabulary
    assert t5_tokenizer.decode(tokens, skip_special_tokens=True) != "Łódź"


def test_a_token_covering_more_than_the_answer_counts_only_when_scoring_ignores_the_rest(t5_tokenizer):
    context = "The sum rose in 1817 to $9.2 million."
    assert copied(t5_tokenizer, context, "7", context.index("817") + 2) is None  # a piece of "1817"
    assert copied(t5_tokenizer, context, "9.2 million") == "$9.2 million"  # t5-small's "▁$9": "$" scores nothing


def test_context_tokens_are_only_the_context_s(t5_tokenizer):
    w = window(t5_tokenizer)
    ids, covered = spans.context_tokens(w.input_ids, w.offsets)
    assert len(ids) == sum(start >= 0 for start, _ in w.offsets) < len(w.input_ids)
    assert covered[0, 0] == 0 and covered[-1, 1] == len(CONTEXT)  # from the context's first character to its last
    assert (covered[1:, 0] >= covered[:-1, 0]).all() and (covered[:, 0] <= covered[:, 1]).all()


def test_every_gold_answer_of_the_real_sample_that_token_edges_bound_is_copyable(t5_tokenizer):
    """The extractive ceiling on real SQuAD text with t5-small's tokenizer: a gold answer that starts
    and ends where tokens do copies back. The rest start or end inside a token ("7" of "1817", "C" of
    "City", "four" of "fourth"), or end before a full stop the token holds ("2015" of "▁2015."), which
    copying keeps and scoring ignores."""
    for split, at_least in (("train", 0.99), ("validation", 0.99)):
        rows = squad.read_file(SQUAD_SAMPLE / f"{split}.json")
        per_question = windows.split(t5_tokenizer, rows["question"], rows["context"], 512, 128)
        copyable = 0
        for row, question_windows in zip(rows, per_question):
            text, start = row["answers"]["text"][0], row["answers"]["answer_start"][0]
            w = next(w for w in question_windows if w.first <= start and start + len(text) <= w.end)
            source = spans.context_tokens(w.input_ids, w.offsets)
            span = spans.answer_span(source, row["context"], start, text)
            bounded = start in source[1][:, 0] and start + len(text) in source[1][:, 1]
            assert span or not bounded, text
            copyable += bool(span) and metrics.exact_match(spans.span_text(source, row["context"], *span), text)
        assert copyable / len(rows) >= at_least, (split, copyable)


def test_scratch_tokenizers_copy_alike():
    """The project's own BPE tokenizer goes through the same copying."""
    tokenizer = vocabulary.train_tokenizer([squad.model_input(QUESTION, CONTEXT)] * 20, vocab_size=200)
    assert copied(tokenizer, CONTEXT, "1830") == "1830"


def test_target_specials_are_what_a_target_has_around_its_text(t5_tokenizer):
    assert spans.target_specials(t5_tokenizer) == ([], [t5_tokenizer.eos_token_id])
