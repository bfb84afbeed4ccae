import random

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


SCRIPTS = {  # words of each script; CJK is written without spaces, so its "words" are long runs
    "latin": ["Chopin", "Warsaw", "(1830)", "\"poet\"", "piano,", "Kraków", "Łódź", "ﬁsh", "naïve", "’n’"],
    "cyrillic": ["Москва", "Душанбе", "река", "город,", "1991"],
    "cjk": ["東京は日本の首都である", "大阪", "京都の寺院と庭園", "二〇二〇年"],
    "mixed": ["Tokyo", "東京", "Αθήνα", "القاهرة", "5½", "$9.2", "{x}"],
}


def random_context(rng, script):
    words = SCRIPTS[script]
    space = 0.05 if script == "cjk" else 0.9  # CJK: a space now and then, between long runs
    text = rng.choice(words)
    for _ in range(rng.randint(20, 160)):
        text += (" " if rng.random() < space else "") + rng.choice(words)
    return text


def test_windows_hold_every_character_of_any_context_for_any_tokenizer_budget_and_stride(t5_tokenizer):
    """Random contexts in several scripts, spaces frequent or rare; t5-small's tokenizer (CJK becomes
    <unk>) and a trained one; random budgets and strides. Together the windows hold the whole context,
    each within budget, and every token's offsets point at the window's own characters."""
    rng = random.Random(0)
    trained = tokenizer()
    checked = 0
    for case in range(120):
        tok = t5_tokenizer if case % 2 else trained
        script = rng.choice(list(SCRIPTS))
        context, question = random_context(rng, script), rng.choice(["Where?", "Who founded the town of Zanstad?"])
        asked = len(tok(squad.model_input(question, ""))["input_ids"])  # the question's tokens, and </s>
        budget = rng.randint(asked + 18, asked + 80)
        stride = rng.randint(8, min(budget // 2, budget - asked) - 1)
        [parts] = windows.split(tok, [question], [context], budget, stride)
        if len(parts) == 1:
            continue
        checked += 1
        assert parts[0].first == 0 and not context[parts[-1].end:].strip()
        for window, following in zip(parts, parts[1:]):
            assert following.first <= window.end, (case, window.end, following.first)  # nothing unread between
        for ids, offsets, first, end in parts:
            assert len(ids) <= budget and len(offsets) == len(ids)
            covered = [(a, b) for a, b in offsets if a >= 0]
            assert all(first <= a <= b <= end for a, b in covered) and max(b for _, b in covered) == end
            inside = set().union(*(range(a, b) for a, b in covered))
            assert all(i in inside for i in range(first, end) if not context[i].isspace()), case  # no character skipped
    assert checked > 80


def test_a_context_with_a_space_every_60_characters_is_read_whole():
    """The reported case: 600 CJK characters, a space every 60, windows sharing 12 of 48 tokens."""
    rng = random.Random(0)
    context = " ".join("".join(rng.choice("東京大阪京都名古屋札幌福岡神戸横浜") for _ in range(60)) for _ in range(10))
    tok = vocabulary.train_tokenizer(["q 東京大阪京都名古屋札幌福岡神戸横浜"], vocab_size=100)  # a token a character
    [parts] = windows.split(tok, ["q"], [context], 48, 12)
    read = set().union(*(range(w.first, w.end) for w in parts))
    assert len(parts) > 2 and read == set(range(len(context)))


def test_a_question_that_leaves_its_context_no_room_gets_no_window():
    tok = tokenizer()
    long_question = "Where was Ada born? " * 8
    assert len(tok(squad.model_input(long_question, ""))["input_ids"]) > 40
    assert windows.split(tok, [long_question, QUESTION], [CONTEXT, CONTEXT], 40, 10)[0] == []
    assert "no room in tokenize.max_source_length = 40 tokens" in windows.too_long(40)


def test_a_closed_book_question_is_one_window_of_the_question_alone():
    tok = tokenizer()
    [[(ids, offsets, first, end)]] = windows.split(tok, [QUESTION], [None], 512, 128)
    assert tok.decode(ids, skip_special_tokens=True) == f"question: {QUESTION}"
    assert (first, end) == (0, 0) and all(span == (-1, -1) for span in offsets)  # nothing to copy from
