"""The contract between training targets and extractive answers: which tokens of a window's context
an answer copies, and which characters of the context those tokens are.

The tokenize stage trains the model to write a gold answer as the context's own tokens of it, at its
own place (answer_span); extractive decoding lets it write only spans of those tokens and answers
with the characters of the span it copied (span_text). Both sides read this module, so the two cannot
drift apart.
"""

import numpy as np

from stages import metrics

PAIRED_MARKS = ["()", "[]", "{}", "“”", "‘’", "«»", '""']
CLOSING = {closing for _, closing in PAIRED_MARKS}


def context_tokens(input_ids, offsets):
    """What an extractive answer may copy from one window: its context tokens, as (ids, spans)
    arrays, spans[i] being the context characters [start, end) token i covers."""
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    in_context = spans[:, 0] >= 0
    return np.asarray(input_ids, dtype=np.int64)[in_context], spans[in_context]


def occurrences(answer_ids, source):
    """The context tokens at which answer_ids occur, as a span: where an answer may have been copied from.
    Several, with different characters, where the ids hide them: every character the vocabulary lacks
    is the same <unk>, and NFKC makes "ﬁ" and "fi" one token."""
    ids, _ = source
    k = len(answer_ids)
    if k == 0 or len(ids) < k:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero((np.lib.stride_tricks.sliding_window_view(ids, k) == np.asarray(answer_ids)).all(1))


def span_text(source, context, first, count):
    """The context characters that `count` tokens from token `first` cover, verbatim ("" for none: no
    answer), less whitespace around them and less what the edge tokens join to the answer without its
    partner: an opening bracket or quote that the first token holds with more characters ("(18" of
    "(1830)") and whose closing one the span lacks, the same at the end, and a full stop or comma after
    a closing mark in the last token ('".'). A mark that is a token of its own was copied on purpose,
    and stays (‘Abbas, Beatles’)."""
    if count == 0:
        return ""
    _, spans = source
    (begin, first_end), (last_begin, end) = spans[first], spans[first + count - 1]
    while begin < end and context[begin].isspace():
        begin += 1
    while end > begin and context[end - 1].isspace():
        end -= 1
    if end - 2 >= last_begin and context[end - 1] in ".,;:" and context[end - 2] in CLOSING:
        end -= 1
    for opening, closing in PAIRED_MARKS:
        if (context[begin:begin + 1] == opening and closing not in context[begin + 1:end]
                and context[begin + 1:first_end].strip()):
            begin += 1
        if (end - 1 > begin and context[end - 1] == closing and opening not in context[begin:end - 1]
                and context[last_begin:end - 1].strip()):
            end -= 1
    return context[begin:end].strip()


def answer_span(source, context, start, text):
    """The fewest context tokens that cover the gold answer `text` at character `start`, as (first
    token, count), or None where what they copy (span_text) is more than SQuAD's normalisation ignores:
    the tokens of "1817" do not answer "7". Trained to write these tokens, the model answers with spans
    it can copy."""
    _, spans = source
    end = start + len(text)
    inside = np.flatnonzero((spans[:, 1] > start) & (spans[:, 0] < end) | (spans[:, 0] == start))
    if not len(inside):
        return None
    first, count = int(inside[0]), int(inside[-1] - inside[0] + 1)
    return (first, count) if metrics.exact_match(span_text(source, context, first, count), text) else None


def target_specials(tokenizer):
    """The special tokens a target gets before and after its text (T5: none and </s>; BART: <s> and </s>):
    the decoder writes the first ones before any answer."""
    text = tokenizer(text_target="a", add_special_tokens=False)["input_ids"]
    full = tokenizer(text_target="a")["input_ids"]
    at = next(i for i in range(len(full)) if full[i:i + len(text)] == text)
    return full[:at], full[at + len(text):]
