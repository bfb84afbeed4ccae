"""Answering: greedy generation, extractive (a span of the context, returned verbatim) or free, and the
choice between the answers of a long context's windows.

A window is the model input of one question (`question: ... context: ...`, or a piece of a long
context) with, for each input token, the context characters [start, end) it covers, or (-1, -1) for
the question, the prompt words and special tokens (windows.split makes them).
"""

import copy
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from stages import spans, windows

PREFETCH = 2  # generation batches padded ahead of the one the model answers


class CopySpan(LogitsProcessor):
    """Extractive decoding: each answer is a span of its window's context tokens, then </s>.

    After a generated prefix only the tokens that follow that prefix somewhere in the context
    stay allowed (a SQuAD answer is a span of its context: never of the question or the prompt), so
    a model that has learned to copy but mixes up two names is steered to a span that exists; </s>
    may end the answer at any point (at once: SQuAD v2's "no answer"). `sources` holds each row's
    context token ids, padded with -1. The decoder's first `prompt_length` tokens (T5: <pad>; BART:
    </s> <s>, as its training targets start) are left alone. A few tensor operations per generated
    token for the whole batch, none waiting for the GPU.
    """

    def __init__(self, sources, eos_token_id, prompt_length):
        self.sources, self.eos_token_id, self.prompt_length = sources, eos_token_id, prompt_length

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] < self.prompt_length:
            return scores
        prefix = input_ids[:, self.prompt_length:]
        source = self.sources.repeat_interleave(input_ids.shape[0] // self.sources.shape[0], dim=0)  # beams
        k, n = prefix.shape[1], source.shape[1]
        if k == 0:
            following = source
        elif k >= n:
            following = source[:, :0]
        else:
            starts = (source.unfold(1, k, 1)[:, :n - k] == prefix[:, None, :]).all(-1)  # where the prefix occurs
            following = source[:, k:].masked_fill(~starts, -1)
        vocab = scores.shape[1]
        allowed = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
        allowed.scatter_(1, following.masked_fill(following < 0, vocab), True)  # -1 goes to the extra column
        allowed[:, self.eos_token_id] = True
        return scores.masked_fill(~allowed[:, :vocab], float("-inf"))


def source_tensor(sources):
    """CopySpan's tensor: each row's context token ids, padded with -1."""
    tensor = np.full((len(sources), max(len(ids) for ids, _ in sources)), -1, dtype=np.int64)
    for row, (ids, _) in zip(tensor, sources):
        row[:len(ids)] = ids
    return torch.from_numpy(tensor)


@torch.inference_mode()
def generate(model, tokenizer, windows, contexts, batch_size, max_new_tokens, extractive):
    """Greedy answers to windows [(input_ids, offsets)], contexts[i] being window i's whole context:
    (texts, token ids). Extractive: each answer copies a span of its window's context tokens
    (CopySpan) and is the characters of the span it copied (spans.span_text; attended_spans where its
    tokens stand at several places for different characters); otherwise the decoded tokens (then
    characters the vocabulary lacks are lost: "Kraków" -> "Krakw"), never ids past the tokenizer's
    last (t5-small's embedding has 28 rows more). The decoder starts as the training targets do
    (BART: </s> <s>), whatever the checkpoint forces. Batches of similar length waste no padding,
    and a thread pads the next batches (and finds their copy sources) while the model answers this
    one, so the GPU does not wait for the CPU."""
    model.eval()
    prompt = [model.config.decoder_start_token_id, *spans.target_specials(tokenizer)[0]]
    settings = copy.deepcopy(model.generation_config)
    beyond = list(range(len(tokenizer), model.get_output_embeddings().weight.shape[0]))
    settings.update(forced_bos_token_id=None,  # the prompt holds the targets' first tokens
                    max_new_tokens=max_new_tokens, num_beams=1, do_sample=False, suppress_tokens=beyond or None)
    order = sorted(range(len(windows)), key=lambda i: len(windows[i][0]))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]

    def prepare(batch):
        inputs = tokenizer.pad({"input_ids": [windows[i][0] for i in batch]}, return_tensors="pt")
        sources = [spans.context_tokens(*windows[i]) for i in batch] if extractive else None
        return inputs, sources

    texts, answer_ids, ambiguous = [None] * len(windows), [None] * len(windows), {}
    with ThreadPoolExecutor(1) as pool:
        ahead = deque(pool.submit(prepare, batch) for batch in batches[:PREFETCH])  # bounded: memory stays flat
        for n, batch in enumerate(tqdm(batches, desc="generating", unit="batch")):
            inputs, sources = ahead.popleft().result()
            if n + PREFETCH < len(batches):
                ahead.append(pool.submit(prepare, batches[n + PREFETCH]))
            processors = LogitsProcessorList()
            if extractive:
                processors.append(CopySpan(source_tensor(sources).to(model.device), tokenizer.eos_token_id,
                                           len(prompt)))
            output = model.generate(**inputs.to(model.device), decoder_input_ids=torch.tensor(
                [prompt] * len(batch), device=model.device), generation_config=settings,
                logits_processor=processors).cpu().numpy()
            for j, (i, row) in enumerate(zip(batch, output[:, len(prompt):])):
                stop = np.flatnonzero((row == tokenizer.eos_token_id) | (row == tokenizer.pad_token_id))
                ids = row[:stop[0] if len(stop) else len(row)]
                answer_ids[i] = ids.tolist()
                if extractive:
                    places = spans.occurrences(ids, sources[j])
                    copies = [spans.span_text(sources[j], contexts[i], place, len(ids)) for place in places]
                    assert len(ids) == 0 or copies, "CopySpan let through tokens its window does not hold"
                    texts[i] = copies[0] if copies else ""
                    if len(set(copies)) > 1:
                        ambiguous[i] = places
                else:
                    texts[i] = " ".join(tokenizer.decode(ids, skip_special_tokens=True).split())
    if ambiguous:
        rows = list(ambiguous)
        for i, place in zip(rows, attended_spans(model, tokenizer, [windows[i] for i in rows],
                                                 [answer_ids[i] for i in rows], [ambiguous[i] for i in rows],
                                                 batch_size)):
            texts[i] = spans.span_text(spans.context_tokens(*windows[i]), contexts[i], place, len(answer_ids[i]))
    return texts, answer_ids


def forced(model, tokenizer, input_ids, answer_ids, batch_size, **forward):
    """The model's outputs with each answer, between its target's special tokens, as the decoder's input,
    in batches of similar length: yields (the rows of a batch, their labels, -100 as padding, the output)."""
    head, tail = spans.target_specials(tokenizer)
    labels = [head + list(ids) + tail for ids in answer_ids]
    order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        inputs = tokenizer.pad({"input_ids": [input_ids[i] for i in batch]}, return_tensors="pt").to(model.device)
        target = tokenizer.pad({"input_ids": [labels[i] for i in batch]}, return_tensors="pt").to(model.device)
        target = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
        yield batch, target, model(**inputs, labels=target, **forward)


@torch.inference_mode()
def attended_spans(model, tokenizer, windows, answer_ids, places, batch_size):
    """Which of the places an answer's tokens stand at (first context tokens) it was copied from:
    the one the decoder's cross-attention weighed most, each answer token on its own token there,
    averaged over layers and heads (as OpenNMT's replace_unk puts back the source word of an <unk>).
    Attention weights need eager attention: the model runs so for these few answers only."""
    head = len(spans.target_specials(tokenizer)[0])
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    chosen = [None] * len(windows)
    try:
        for batch, _, output in forced(model, tokenizer, [w[0] for w in windows], answer_ids, batch_size,
                                       output_attentions=True):
            weights = torch.stack(output.cross_attentions).float().mean((0, 2)).cpu().numpy()  # row, step, input
            for row, i in zip(weights, batch):
                inputs = np.flatnonzero(np.asarray(windows[i][1]).reshape(-1, 2)[:, 0] >= 0)  # of context tokens
                steps = head + np.arange(len(answer_ids[i]))  # answer token t, read on token t of the place
                chosen[i] = max(places[i], key=lambda place: row[steps, inputs[place:place + len(steps)]].sum())
    finally:
        model.set_attn_implementation(implementation)
    return chosen


@torch.inference_mode()
def answer_log_probs(model, tokenizer, input_ids, answer_ids, batch_size):
    """log P(answer | input) under the model for each (input, answer tokens) pair, its target's special
    tokens included, unconstrained by CopySpan: comparable between inputs, e.g. the windows of one long
    context."""
    model.eval()
    scores = [None] * len(input_ids)
    for batch, target, output in forced(model, tokenizer, input_ids, answer_ids, batch_size):
        token_log_probs = output.logits.float().log_softmax(-1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
        for i, value in zip(batch, token_log_probs.masked_fill(target == -100, 0).sum(1).tolist()):
            scores[i] = value
    return scores


def answer(model, tokenizer, ids, windows, contexts, batch_size, max_new_tokens, extractive):
    """One answer per question id from the rows of its windows (`ids[i]` is row i's question, its
    windows in order, `contexts[i]` its context): every window is answered, then `choose` picks.
    Returns {id: (answer, the first window's answer: what plain truncation would have answered)}."""
    texts, answer_ids = generate(model, tokenizer, windows, contexts, batch_size, max_new_tokens, extractive)
    counts = Counter(ids)
    windowed = [i for i, qid in enumerate(ids) if counts[qid] > 1]  # only they need scores
    log_probs = dict(zip(windowed, answer_log_probs(
        model, tokenizer, [windows[i][0] for i in windowed], [answer_ids[i] for i in windowed], batch_size)))
    return choose(ids, texts, log_probs)


def answer_questions(model, tokenizer, questions, contexts, tokenize_params, evaluate_params):
    """Answers in the order of the questions, read as the tokenize stage reads them (long contexts as
    windows) and decoded as the evaluate stage decodes the test split; None for a question that leaves
    its context no room (windows.too_long). With tokenize_params' context false (closed book) the
    inputs are the questions alone, answered by free generation: there is nothing to copy from."""
    reads_context = tokenize_params.get("context", True)
    if not reads_context:
        contexts = [None] * len(questions)
    per_question = windows.split(tokenizer, questions, contexts, tokenize_params["max_source_length"],
                                 tokenize_params["stride"])
    ids = [i for i, question_windows in enumerate(per_question) for _ in question_windows]
    chosen = answer(model, tokenizer, ids, [(w.input_ids, w.offsets) for ws in per_question for w in ws],
                    [contexts[i] for i in ids], evaluate_params["batch_size"], evaluate_params["max_new_tokens"],
                    evaluate_params["extractive"] and reads_context)
    return [chosen[i][0] if i in chosen else None for i in range(len(questions))]


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
