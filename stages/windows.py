"""Long contexts: a context too long for the source budget is read as overlapping windows, and a
question's answer is the one its windows' answers the model is surest of.

Plain truncation would train the model to produce answers that are not in its input, and would
never show it the end of a long context at evaluation.
"""

import re
from collections import Counter, defaultdict

from stages import modeling, squad
from stages.errors import InputError

SPACE = re.compile(r"\s+")


def split(tokenizer, questions, contexts, max_source_length, stride):
    """Each question's model inputs `question: ... context: ...`, as a list of (input_ids, first, end):
    the whole context when it fits in max_source_length tokens, else windows of it that share `stride`
    context tokens with the next, [first, end) being the context characters a window holds."""
    prefixes = [squad.model_input(question, "") for question in questions]
    whole = tokenizer([p + c for p, c in zip(prefixes, contexts)], return_offsets_mapping=True)
    out = []
    for prefix, context, ids, offsets in zip(prefixes, contexts, whole["input_ids"], whole["offset_mapping"]):
        if len(ids) <= max_source_length:
            out.append([(ids, 0, len(context))])
            continue
        # context tokens as context character spans (a word's token may start at the space before it)
        spans = [(max(a, len(prefix)) - len(prefix), b - len(prefix)) for a, b in offsets if b > len(prefix)]
        room = max_source_length - (len(ids) - len(spans))  # what the question and special tokens leave
        if room <= stride:
            raise InputError(f"tokenize.stride = {stride} leaves windows no room to advance: question "
                             f"{prefix[:60]!r} leaves {room} of tokenize.max_source_length = "
                             f"{max_source_length} tokens to its context; lower tokenize.stride")
        bounds = [words(context, spans[s][0], spans[min(s + room, len(spans)) - 1][1])
                  for s in range(0, max(len(spans) - stride, 1), room - stride)]
        cut = tokenizer([prefix + context[first:end] for first, end in bounds], max_length=max_source_length,
                        truncation=True, return_offsets_mapping=True)
        out.append([(window_ids, first, first + max(b for _, b in window_offsets) - len(prefix))  # what was kept
                    for (first, _), window_ids, window_offsets in zip(bounds, cut["input_ids"], cut["offset_mapping"])])
    return out


def words(text, first, end):
    """[first, end) narrowed to whole words: a window starts and ends as words do (the windows beside
    it hold the parts cut), so that no answer is a piece of a word."""
    if first and not (text[first - 1].isspace() and not text[first].isspace()):
        first = next((gap.end() for gap in SPACE.finditer(text, first, end)), first)
    if end < len(text) and not text[end].isspace():
        end = max((gap.start() for gap in SPACE.finditer(text, first, end)), default=end)
    return first, end


def answer(model, tokenizer, ids, input_ids, batch_size, max_new_tokens, extractive):
    """One answer per question id from the rows of its windows (`ids[i]` is row i's question, its
    windows in order): every window is answered, then `choose` picks. Returns {id: (answer, the
    first window's answer: what plain truncation would have answered)}."""
    answers = modeling.generate(model, tokenizer, input_ids, batch_size, max_new_tokens, extractive)
    counts = Counter(ids)
    windowed = [i for i, qid in enumerate(ids) if counts[qid] > 1]  # only they need scores
    log_probs = dict(zip(windowed, modeling.answer_log_probs(
        model, tokenizer, [input_ids[i] for i in windowed], [answers[i] for i in windowed], batch_size)))
    return choose(ids, answers, log_probs)


def choose(ids, answers, log_probs):
    """Per question id, the answer of its window with the highest log-probability of that answer
    (log_probs: row -> score, for questions of several windows); a window's "no answer" (empty)
    never beats a real answer. Returns {id: (answer, the first window's answer)}."""
    rows = defaultdict(list)
    for i, qid in enumerate(ids):
        rows[qid].append(i)
    return {qid: (answers[max(members, key=lambda i: (answers[i] != "", log_probs.get(i, 0.0)))],
                  answers[members[0]])
            for qid, members in rows.items()}
