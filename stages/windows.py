"""Long contexts: a context too long for the source budget is read as overlapping windows (the
answer is then the one of its windows' answers the model is surest of: decoding.choose).

Plain truncation would train the model to produce answers that are not in its input, and would
never show it the end of a long context at evaluation.
"""

import bisect
import re
from typing import NamedTuple

from stages import squad
from stages.errors import InputError

SPACE = re.compile(r"\s+")
MIN_STRIDE = 8  # params.py's lowest tokenize.stride: a question leaving no more room than this is too long


class Window(NamedTuple):
    """One model input: token ids, the context characters [start, end) each token covers ((-1, -1):
    the question, the prompt words or a special token), and the context characters [first, end) it holds."""
    input_ids: list
    offsets: list
    first: int
    end: int


def too_long(max_source_length):
    """What is wrong with a question that leaves its context no room (split gives it no window)."""
    return f"the question leaves its context no room in tokenize.max_source_length = {max_source_length} tokens"


def split(tokenizer, questions, contexts, max_source_length, stride):
    """Each question's model inputs `question: ... context: ...` as a list of Windows: the whole
    context when it fits in max_source_length tokens, else windows of it that share about `stride`
    context tokens with the next, and [] for a question too long to leave its context room (too_long).

    Each window starts where the previous one's kept text still holds about `stride` tokens, so
    together they hold every character of the context, whatever the tokenizer does to a piece of
    text. A window starts and ends at a space where one lies in the shared part (no answer is then
    cut from its word), else inside a word: the windows beside it hold the whole word. A context of None
    (closed book) gives one window of the question alone, with no context token to copy."""
    prefixes = [squad.model_input(question, "") for question in questions]
    whole = tokenizer([squad.model_input(q, None) if c is None else p + c
                       for q, p, c in zip(questions, prefixes, contexts)], return_offsets_mapping=True)
    out, tokens, pending = [], {}, {}  # pending: question -> (context token its next window starts at, kept end)
    for i, (prefix, context, ids, offsets) in enumerate(zip(prefixes, contexts, whole["input_ids"],
                                                            whole["offset_mapping"])):
        if context is None:  # closed book: no token is the context's
            out.append([Window(ids, [(-1, -1)] * len(ids), 0, 0)] if len(ids) <= max_source_length else [])
            continue
        spans = in_context(offsets, len(prefix), 0)
        if len(ids) <= max_source_length:
            out.append([Window(ids, spans, 0, len(context))])
            continue
        spans = [span for span in spans if span[0] >= 0]
        room = max_source_length - (len(ids) - len(spans))  # what the question and special tokens leave
        out.append([])
        if room <= MIN_STRIDE:
            continue
        if room <= stride:
            raise InputError(f"tokenize.stride = {stride} leaves windows no room to advance: question "
                             f"{prefix[:60]!r} leaves {room} of tokenize.max_source_length = "
                             f"{max_source_length} tokens to its context; lower tokenize.stride")
        tokens[i] = ([a for a, _ in spans], [b for _, b in spans], room)
        pending[i] = (0, 0)
    while pending:  # one batch of windows a round: each question's next window starts from its last one's end
        bounds = {i: plan(contexts[i], *tokens[i], stride, *pending[i]) for i in pending}
        cut = tokenizer([prefixes[i] + contexts[i][first:end] for i, (_, first, end) in bounds.items()],
                        max_length=max_source_length, truncation=True, return_offsets_mapping=True)
        pending = {}
        for (i, (start, first, _)), ids, offsets in zip(bounds.items(), cut["input_ids"], cut["offset_mapping"]):
            window_spans = in_context(offsets, len(prefixes[i]), first)
            kept = max(b for _, b in window_spans)  # truncation may have cut the planned end
            out[i].append(Window(ids, window_spans, first, kept))
            if contexts[i][kept:].strip():
                starts, ends, _ = tokens[i]
                pending[i] = (min(max(bisect.bisect_right(ends, kept) - stride, start + 1), len(starts) - 1), kept)
    return out


def plan(context, starts, ends, room, stride, start, kept):
    """The next window: (its first context token, its characters [first, end)). It starts at token
    `start` (never past `kept`, where the previous window's text ends), or at the first word within
    half the shared part; it ends `room` tokens on, or at the last space within half the shared part."""
    last = min(start + room, len(starts)) - 1
    first, end = min(starts[start], kept), ends[last] if last < len(starts) - 1 else len(context)
    if first and not context[first - 1].isspace():
        limit = min(starts[min(start + stride // 2, len(starts) - 1)], kept)
        first = next((gap.end() for gap in SPACE.finditer(context, first, limit)), first)
    if end < len(context) and not context[end].isspace():
        end = max((gap.start() for gap in SPACE.finditer(context, starts[last - stride // 2], end)), default=end)
    return start, first, end


def in_context(offsets, prefix_length, first):
    """Token offsets in `prefix + context[first:]` as context characters, (-1, -1) for tokens outside
    the context (a word's token may start at the space before it: it starts at the word)."""
    return [(max(a, prefix_length) - prefix_length + first, b - prefix_length + first) if b > prefix_length
            else (-1, -1) for a, b in offsets]
