"""SQuAD-style answer metrics (exact match, token F1) plus ROUGE.

Exact match and F1 follow the official SQuAD evaluation scripts: v1.1, and v2.0 for questions
without a gold answer (unanswerable: only the empty answer is right), with v2.0's has-answer /
no-answer split. ROUGE comes from rouge_score, on the raw strings, tokenized for any script
(AnyScriptTokenizer). Every score is on a 0-100 scale.
"""

import re
import string
import unicodedata
from collections import Counter

from rouge_score import rouge_scorer, tokenize, tokenizers

METRICS = ("exact_match", "f1", "precision", "recall", "rouge1", "rouge2", "rougeL", "rougeLsum")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, kana, Bopomofo, CJK ideographs
UNSPACED = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u312f\u31f0-\u31ff\u3400-\u4dbf"
                      "\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]")


class AnyScriptTokenizer(tokenizers.Tokenizer):
    """rouge_score's own tokenizer on ASCII text, its rule for every script on other text. rouge_score keeps
    [a-z0-9] only, so an exactly right "Москва" or "東京" scored 0. Here letters, digits and combining marks
    of any script make words and anything else separates them, lowercased as rouge_score does; in scripts
    written without spaces each character is a word (with its marks), as multilingual ROUGE scores CJK
    (XL-Sum, Hasan et al., 2021)."""

    def tokenize(self, text):
        if text.isascii():
            return tokenize.tokenize(text, None)
        words, unspaced = [""], False  # unspaced: the word being built is one character of such a script
        for ch in text.lower():
            kind = unicodedata.category(ch)[0]
            if kind not in "LNM":
                words.append("")
            elif kind != "M" and (unspaced or UNSPACED.match(ch)):
                words.append(ch)
            else:
                words[-1] += ch
            unspaced = kind in "LN" and bool(UNSPACED.match(ch)) or kind == "M" and unspaced
        return [word for word in words if word]


# building a scorer is not free, so make one and reuse it
_rouge = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=AnyScriptTokenizer())

_PUNCTUATION = set(string.punctuation)


def normalize_answer(s):
    """Lowercase, strip punctuation and articles, collapse whitespace (official SQuAD v1.1)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction, gold):
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_precision_recall(prediction, gold):
    """Token-overlap (F1, precision, recall) on normalised tokens, each in [0, 1]."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    # v1.1 would divide by zero here; like SQuAD v2: both empty = perfect, one empty = nothing
    if not pred_tokens or not gold_tokens:
        match = float(pred_tokens == gold_tokens)
        return match, match, match
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0, 0.0, 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall), precision, recall


def score_question(prediction, golds):
    """Score one prediction against its gold answers, on a 0-100 scale.

    Each metric is the max over the gold answers independently, so e.g. the best
    precision and the best recall may come from different golds. No golds: an unanswerable
    question, whose one right answer is "" (SQuAD v2.0).
    """
    golds = golds or [""]
    best = dict.fromkeys(METRICS, 0.0)
    for gold in golds:
        f1, precision, recall = f1_precision_recall(prediction, gold)
        rouge = _rouge.score(gold, prediction)  # rouge_score takes (target, prediction)
        scores = {"exact_match": exact_match(prediction, gold), "f1": f1,
                  "precision": precision, "recall": recall}
        # rouge_score gives 0 to "" against "": the right answer to an unanswerable question scores 1
        scores.update({name: rouge[name].fmeasure if gold.strip() or prediction.strip() else 1.0
                       for name in ROUGE_TYPES})
        for name in METRICS:
            best[name] = max(best[name], 100.0 * scores[name])
    return best


def aggregate(per_question, missing=0):
    """Mean of each metric over the questions (0-100, unrounded), plus counts."""
    if not per_question:
        raise ValueError("cannot aggregate zero questions")
    result = {name: sum(q[name] for q in per_question) / len(per_question) for name in METRICS}
    result["questions"] = len(per_question)
    result["missing_predictions"] = missing
    return result


def score(golds_by_id, predictions):
    """Score predictions against every question in golds_by_id.

    A question with no prediction scores 0 in every metric (not score_question(""),
    which would give EM 1 against a gold like "the" that normalises to empty).
    Predictions for ids not in golds_by_id are ignored; empty_predictions counts the empty answers ("no answer").
    With unanswerable questions (no golds) among them, the aggregate adds SQuAD v2.0's split:
    has_answer and no_answer, each with its exact_match, f1 and questions.
    Returns (aggregate dict, per-id scores).
    """
    per_id = {}
    missing = 0
    for qid, golds in golds_by_id.items():
        if qid in predictions:
            per_id[qid] = score_question(predictions[qid], golds)
        else:
            per_id[qid] = dict.fromkeys(METRICS, 0.0)
            missing += 1
    result = aggregate(list(per_id.values()), missing)
    result["empty_predictions"] = sum(predictions.get(qid) == "" for qid in golds_by_id)  # "no answer" given
    if not all(golds_by_id.values()):
        for name, group in (("has_answer", [q for q, g in golds_by_id.items() if g]),
                            ("no_answer", [q for q, g in golds_by_id.items() if not g])):
            result[name] = {metric: sum(per_id[q][metric] for q in group) / max(len(group), 1)
                            for metric in ("exact_match", "f1")} | {"questions": len(group)}
    return result, per_id
