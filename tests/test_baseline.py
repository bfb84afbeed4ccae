from stages import baseline


def test_the_baseline_answers_with_the_first_span_of_the_asked_type_not_named_in_the_question():
    context = "Ada Byron met Charles Babbage in London in 1833. Ada Byron was born in 1815."
    assert baseline.answer("When did Ada Byron meet Charles Babbage?", context) == "1833"
    assert baseline.answer("Who did Ada Byron meet?", context) == "Charles Babbage"
    assert baseline.answer("Where did they meet?", context) == "Ada"  # the first capitalised word: a poor baseline
    assert baseline.answer("How many?", context) == "Ada"  # no number: it falls back to a capitalised word
