import pytest
from rouge_score import rouge_scorer
from rouge_score import tokenize as rouge_tokenize

from stages import squad
from stages.metrics import (
    METRICS,
    ROUGE_TYPES,
    AnyScriptTokenizer,
    aggregate,
    exact_match,
    f1_precision_recall,
    normalize_answer,
    score,
    score_question,
)
from tests.conftest import SQUAD_SAMPLE


def test_normalize_answer():
    assert normalize_answer("The  Quick, Brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre anthem") == "theatre anthem"  # articles only as whole words
    assert normalize_answer("U.S.A.") == "usa"


def test_exact_match_ignores_articles_punctuation_case_whitespace():
    assert exact_match("the Eiffel Tower", "Eiffel Tower") == 1.0
    assert exact_match("Hello, World!", "hello world") == 1.0
    assert exact_match("  New   York\n", "New York") == 1.0
    assert exact_match("New York City", "New York") == 0.0


def test_partial_overlap_f1():
    # normalised: ["in", "year", "1843"] vs ["1843"]
    f1, precision, recall = f1_precision_recall("in the year 1843", "1843")
    assert precision == pytest.approx(1 / 3)
    assert recall == pytest.approx(1.0)
    assert f1 == pytest.approx(0.5)


def test_repeated_tokens_counted_by_multiset():
    # ["paris", "paris"] vs ["paris"]: only one overlap, P=1/2, R=1, F1=2/3
    assert f1_precision_recall("Paris Paris", "Paris") == pytest.approx((2 / 3, 0.5, 1.0))


def test_no_overlap():
    assert f1_precision_recall("London", "Paris") == (0.0, 0.0, 0.0)


def test_empty_token_lists():
    assert f1_precision_recall("", "the") == (1.0, 1.0, 1.0)  # both normalise to empty
    assert f1_precision_recall("a", "") == (1.0, 1.0, 1.0)
    assert f1_precision_recall("the", "cat") == (0.0, 0.0, 0.0)
    assert f1_precision_recall("cat", "") == (0.0, 0.0, 0.0)


def test_score_question_exact():
    s = score_question("the Eiffel Tower", ["Eiffel Tower"])
    assert set(s) == set(METRICS)
    assert s["exact_match"] == 100.0
    assert s["f1"] == pytest.approx(100.0)
    assert s["precision"] == pytest.approx(100.0)
    assert s["recall"] == pytest.approx(100.0)
    # rouge_score keeps "the": pred [the, eiffel, tower] vs gold [eiffel, tower]
    # rouge1: P=2/3, R=1 -> F=0.8; rouge2: bigrams 1/2 vs 1/1 -> F=2/3
    assert s["rouge1"] == pytest.approx(80.0)
    assert s["rouge2"] == pytest.approx(200 / 3)
    assert s["rougeL"] == pytest.approx(80.0)


def test_score_question_rouge_hand_computed():
    # tokens: [the, cat, sat, on, the, mat] vs [the, cat, lay, on, the, mat]
    # rouge1: 5 shared unigrams of 6 each -> 5/6
    # rouge2: shared bigrams the-cat, on-the, the-mat: 3 of 5 each -> 3/5
    # rougeL: LCS "the cat on the mat" = 5 of 6 each -> 5/6; single line so Lsum equal
    s = score_question("The cat sat on the mat.", ["the cat lay on the mat"])
    assert s["rouge1"] == pytest.approx(500 / 6)
    assert s["rouge2"] == pytest.approx(60.0)
    assert s["rougeL"] == pytest.approx(500 / 6)
    assert s["rougeLsum"] == pytest.approx(500 / 6)


def test_rouge_l_differs_from_rouge1_on_reordering():
    # [a, b, c, d] vs [d, c, b, a]: every unigram shared (1.0), no bigram shared,
    # LCS length 1 -> P=R=1/4
    s = score_question("a b c d", ["d c b a"])
    assert s["rouge1"] == pytest.approx(100.0)
    assert s["rouge2"] == pytest.approx(0.0)
    assert s["rougeL"] == pytest.approx(25.0)


def test_score_question_takes_max_per_metric_independently():
    # vs "1843": P=1/3, R=1, F1=1/2
    # vs "year 1843 in Paris": ["year", "1843", "in", "paris"], 3 shared -> P=1, R=3/4, F1=6/7
    s = score_question("in the year 1843", ["1843", "year 1843 in Paris"])
    assert s["exact_match"] == 0.0
    assert s["precision"] == pytest.approx(100.0)  # from the second gold
    assert s["recall"] == pytest.approx(100.0)  # from the first gold
    assert s["f1"] == pytest.approx(600 / 7)
    assert score_question("Paris", ["London", "paris"])["exact_match"] == 100.0


def test_empty_prediction_scores_zero():
    s = score_question("", ["Eiffel Tower"])
    assert s == {name: 0.0 for name in METRICS}


def test_without_golds_only_the_empty_answer_is_right():  # SQuAD v2.0's unanswerable questions
    assert score_question("", [])["exact_match"] == 100.0 and score_question("", [])["f1"] == 100.0
    assert score_question("", [])["rougeL"] == 100.0 and score_question("Paris", [])["rougeL"] == 0.0
    assert score_question("Paris", [])["exact_match"] == 0.0 and score_question("Paris", [])["f1"] == 0.0


def test_v2_data_adds_the_has_answer_and_no_answer_split():
    result, _ = score({"a": ["Paris"], "b": [], "c": []}, {"a": "paris", "b": "", "c": "Rome"})
    assert result["has_answer"] == {"exact_match": 100.0, "f1": 100.0, "questions": 1}
    assert result["no_answer"] == {"exact_match": 50.0, "f1": 50.0, "questions": 2}
    assert "has_answer" not in score({"a": ["Paris"]}, {"a": "Paris"})[0]  # v1.1 data: no split


def test_aggregate_means():
    a = dict.fromkeys(METRICS, 100.0)
    b = dict.fromkeys(METRICS, 0.0)
    b["f1"] = 50.0
    result = aggregate([a, b], missing=1)
    assert result["exact_match"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(75.0)
    assert result["rougeLsum"] == pytest.approx(50.0)
    assert result["questions"] == 2
    assert result["missing_predictions"] == 1
    assert set(result) == set(METRICS) | {"questions", "missing_predictions"}


def test_aggregate_empty_raises():
    with pytest.raises(ValueError):
        aggregate([])


def test_score_missing_and_extra_predictions():
    # q2 is missing; its gold "the" normalises to empty, so an empty prediction
    # would get EM 100 -- a missing prediction must still score 0
    golds = {"q1": ["Paris"], "q2": ["the"]}
    predictions = {"q1": "paris", "not-a-question": "anything"}
    result, per_id = score(golds, predictions)
    assert set(per_id) == {"q1", "q2"}
    assert per_id["q1"]["exact_match"] == 100.0
    assert per_id["q2"] == {name: 0.0 for name in METRICS}
    assert result["questions"] == 2
    assert result["missing_predictions"] == 1
    assert result["exact_match"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(50.0)
    assert result["rouge1"] == pytest.approx(50.0)


def test_score_all_present():
    result, _ = score({"q1": ["Paris"]}, {"q1": "London"})
    assert result["missing_predictions"] == 0
    assert result["exact_match"] == 0.0


@pytest.mark.parametrize("answer", ["Москва", "東京", "Αθήνα", "Łódź", "القاهرة", "हिन्दी", "서울", "กรุงเทพ",
                                    "Душанбе", "Rio de Janeiro", "Nizhny Novgorod Нижний Новгород", "北京 大学"])
def test_an_exactly_right_answer_scores_100_in_any_script(answer):
    s = score_question(answer, [answer])
    assert s["exact_match"] == s["f1"] == s["rouge1"] == s["rougeL"] == s["rougeLsum"] == 100.0
    assert s["rouge2"] == (100.0 if len(AnyScriptTokenizer().tokenize(answer)) > 1 else 0.0)  # bigrams: 2+ words


def test_scripts_without_spaces_count_characters_as_rouge_words():
    tokenizer = AnyScriptTokenizer()
    assert tokenizer.tokenize("東京都") == ["東", "京", "都"]
    assert tokenizer.tokenize("Tokyo東京, Ōsaka!") == ["tokyo", "東", "京", "ōsaka"]
    assert tokenizer.tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # combining marks stay in their word
    assert score_question("東京都", ["東京"])["rouge1"] == pytest.approx(80.0)  # 2 of 3 and 2 of 2 characters


def test_on_ascii_text_rouge_is_rouge_score_s_own():
    """Every pair of the real sample's ASCII answers scores as rouge_score's default tokenizer scores it."""
    plain = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    answers = sorted({row["answers"]["text"][0] for split in ("train", "validation")
                      for row in squad.read_file(SQUAD_SAMPLE / f"{split}.json")})
    ascii_answers = [a for a in answers if a.isascii()]
    assert len(ascii_answers) > 700 and len(ascii_answers) < len(answers)  # the sample has others too
    for prediction, gold in zip(ascii_answers, ascii_answers[1:] + ascii_answers[:1]):
        assert AnyScriptTokenizer().tokenize(gold) == rouge_tokenize.tokenize(gold, None)
        ours, theirs = score_question(prediction, [gold]), plain.score(gold, prediction)
        assert [ours[name] for name in ROUGE_TYPES] == [100 * theirs[name].fmeasure for name in ROUGE_TYPES]


def test_empty_answers_are_counted():
    result, _ = score({"q1": ["Paris"], "q2": ["Rome"], "q3": []}, {"q1": "", "q2": "Rome", "q3": ""})
    assert result["empty_predictions"] == 2 and result["missing_predictions"] == 0
