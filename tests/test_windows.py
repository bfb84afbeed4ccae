from stages import squad, vocabulary, windows

CONTEXT = " ".join(f"Town {n} was founded in {1700 + n}." for n in range(30)) + " Ada was born in London."
QUESTION = "Where was Ada born?"


def tokenizer():
    return vocabulary.train_tokenizer([squad.model_input(QUESTION, CONTEXT)] * 20, vocab_size=200)


def test_a_context_that_fits_is_one_window_holding_all_of_it():
    tok = tokenizer()
    [[(ids, offsets, first, end)]] = windows.split(tok, [QUESTION], ["Ada was born in London."], 512, 128)
    assert (first, end) == (0, len("Ada was born in London."))
    assert tok.decode(ids, skip_special_tokens=True) == squad.model_input(QUESTION, "Ada was born in London.")
    assert len(offsets) == len(ids) and offsets[-1] == (-1, -1)  # </s> is no context character


def test_windows_start_and_end_at_whole_words_and_cover_the_context():
    tok = tokenizer()
    [parts] = windows.split(tok, [QUESTION], [CONTEXT], 40, 10)
    assert parts[0].first == 0 and parts[-1].end == len(CONTEXT)
    for window, following in zip(parts, parts[1:]):
        assert following.first < window.end  # overlap: nothing between two windows is unread
    for ids, offsets, first, end in parts:
        assert first == 0 or CONTEXT[first - 1] == " " and CONTEXT[first] != " "
        assert end == len(CONTEXT) or CONTEXT[end] == " "
        assert tok.decode(ids, skip_special_tokens=True) == squad.model_input(QUESTION, CONTEXT[first:end])
        # each context token's offsets point at its characters in the whole context
        spans = [(a, b) for a, b in offsets if a >= 0]
        assert spans[0][0] == first and spans[-1][1] == end
        assert "".join(CONTEXT[a:b] for a, b in spans).replace(" ", "") == CONTEXT[first:end].replace(" ", "")
