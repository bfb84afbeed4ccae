"""The contract between training targets and extractive answers: which tokens of a window's context
an answer copies, and which characters of the context those tokens are.

The tokenize stage trains the model to write a gold answer as the context's own tokens of it
(answer_tokens); extractive decoding lets it write only spans of those tokens and answers with the
characters they cover (copied_text). Both sides read this module, so the two cannot drift apart.
"""

import numpy as np

from stages import metrics

PAIRED_MARKS = ["()", "[]", "{}", "“”", "‘’", "«»", '""']


def context_tokens(input_ids, offsets):
    """What an extractive answer may copy from one window: its context tokens, as (ids, spans)
    arrays, spans[i] being the context characters [start, end) token i covers."""
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    in_context = spans[:, 0] >= 0
    return np.asarray(input_ids, dtype=np.int64)[in_context], spans[in_context]


def copied_text(answer_ids, source, context):
    """The context characters an answer's tokens copy, verbatim: context[start:end] of their first
    occurrence in the source, less unpaired brackets and quotes at its ends ("" for no tokens: no
    answer), or None where they do not occur in it."""
    ids, spans = source
    k = len(answer_ids)
    if k == 0:
        return ""
    if len(ids) < k:
        return None
    hits = np.flatnonzero((np.lib.stride_tricks.sliding_window_view(ids, k) == np.asarray(answer_ids)).all(1))
    return unpaired_marks_trimmed(context[spans[hits[0], 0]:spans[hits[0] + k - 1, 1]]) if len(hits) else None


def unpaired_marks_trimmed(text):
    """text without whitespace around it, nor an opening bracket or quote at its start whose closing
    one it lacks (or the reverse at its end), nor a full stop or comma after a closing one: tokens such
    as "(18" and '".' join marks to words, so the tokens of "1830" in "(1830)" cover "(1830"."""
    text = text.strip()
    if text[-2:-1] in {closing for _, closing in PAIRED_MARKS} and text[-1] in ".,;:":  # a token '".' or ').'
        text = text[:-1]
    for opening, closing in PAIRED_MARKS:
        if text.startswith(opening) and closing not in text[1:]:
            text = text[1:].lstrip()
        if text.endswith(closing) and opening not in text[:-1]:
            text = text[:-1].rstrip()
    return text


def answer_tokens(source, context, start, text):
    """The fewest context tokens that cover the gold answer `text` at character `start`, or None
    where they also cover more than SQuAD's normalisation ignores: the tokens of 'Tajiks".' (one
    token '".') answer 'Tajiks"', those of "1817" do not answer "7". Extractive decoding copies
    such tokens; trained to write them, the model answers with spans it can copy."""
    ids, spans = source
    end = start + len(text)
    inside = np.flatnonzero((spans[:, 1] > start) & (spans[:, 0] < end) | (spans[:, 0] == start))
    if not len(inside) or not metrics.exact_match(context[spans[inside[0], 0]:spans[inside[-1], 1]], text):
        return None
    return ids[inside[0]:inside[-1] + 1].tolist()
