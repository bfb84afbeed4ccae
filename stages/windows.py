"""Long contexts: a context too long for the source budget is read as overlapping windows (the
answer is then the one of its windows' answers the model is surest of: decoding.choose).

Plain truncation would train the model to produce answers that are not in its input, and would
never show it the end of a long context at evaluation.
"""

import re
from typing import NamedTuple

from stages import squad
from stages.errors import InputError

SPACE = re.compile(r"\s+")


class Window(NamedTuple):
    """One model input: token ids, the context characters [start, end) each token covers ((-1, -1):
    the question, the prompt words or a special token), and the context characters [first, end) it holds."""
    input_ids: list
    offsets: list
    first: int
    end: int


def split(tokenizer, questions, contexts, max_source_length, stride):
    """Each question's model inputs `question: ... context: ...` as a list of Windows: the whole
    context when it fits in max_source_length tokens, else windows of it that share `stride` context
    tokens with the next."""
    prefixes = [squad.model_input(question, "") for question in questions]
    whole = tokenizer([p + c for p, c in zip(prefixes, contexts)], return_offsets_mapping=True)
    out = []
    for prefix, context, ids, offsets in zip(prefixes, contexts, whole["input_ids"], whole["offset_mapping"]):
        spans = in_context(offsets, len(prefix), 0)
        if len(ids) <= max_source_length:
            out.append([Window(ids, spans, 0, len(context))])
            continue
        starts = [a for a, _ in spans if a >= 0]
        ends = [b for _, b in spans if b >= 0]
        room = max_source_length - (len(ids) - len(starts))  # what the question and special tokens leave
        if room <= stride:
            raise InputError(f"tokenize.stride = {stride} leaves windows no room to advance: question "
                             f"{prefix[:60]!r} leaves {room} of tokenize.max_source_length = "
                             f"{max_source_length} tokens to its context; lower tokenize.stride")
        bounds = [words(context, starts[s], ends[min(s + room, len(starts)) - 1])
                  for s in range(0, max(len(starts) - stride, 1), room - stride)]
        cut = tokenizer([prefix + context[first:end] for first, end in bounds], max_length=max_source_length,
                        truncation=True, return_offsets_mapping=True)
        question_windows = []
        for (first, _), window_ids, window_offsets in zip(bounds, cut["input_ids"], cut["offset_mapping"]):
            window_spans = in_context(window_offsets, len(prefix), first)
            question_windows.append(Window(window_ids, window_spans, first, max(b for _, b in window_spans)))  # what was kept
        out.append(question_windows)
    return out


def in_context(offsets, prefix_length, first):
    """Token offsets in `prefix + context[first:]` as context characters, (-1, -1) for tokens outside
    the context (a word's token may start at the space before it: it starts at the word)."""
    return [(max(a, prefix_length) - prefix_length + first, b - prefix_length + first) if b > prefix_length
            else (-1, -1) for a, b in offsets]


def words(text, first, end):
    """[first, end) narrowed to whole words: a window starts and ends as words do (the windows beside
    it hold the parts cut), so that no answer is a piece of a word."""
    if first and not (text[first - 1].isspace() and not text[first].isspace()):
        first = next((gap.end() for gap in SPACE.finditer(text, first, end)), first)
    if end < len(text) and not text[end].isspace():
        end = max((gap.start() for gap in SPACE.finditer(text, first, end)), default=end)
    return first, end
