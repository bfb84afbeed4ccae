"""Answering: greedy generation, extractive (a span of the context, returned verbatim) or free, and the
choice between the answers of a long context's windows.

A window is the model input of one question (`question: ... context: ...`, or a piece of a long
context) with, for each input token, the context characters [start, end) it covers, or (-1, -1) for
the question, the prompt words and special tokens (windows.split makes them).
"""

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
    context token ids, padded with -1. The decoder's first `prompt_length` tokens
    (T5: <pad>; BART: </s> and the forced <s>) are left alone. A few tensor operations per generated
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
    (CopySpan) and is those tokens' characters as the context writes them; otherwise the decoded
    tokens (then characters the vocabulary lacks are lost: "Kraków" -> "Krakw"). Batches of
    similar length waste no padding, and a thread pads the next batches (and finds their copy
    sources) while the model answers this one, so the GPU does not wait for the CPU."""
    model.eval()
    prompt_length = 1 + (model.generation_config.forced_bos_token_id is not None)
    order = sorted(range(len(windows)), key=lambda i: len(windows[i][0]))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]

    def prepare(batch):
        inputs = tokenizer.pad({"input_ids": [windows[i][0] for i in batch]}, return_tensors="pt")
        sources = [spans.context_tokens(*windows[i]) for i in batch] if extractive else None
        return inputs, sources

    texts, answer_ids = [None] * len(windows), [None] * len(windows)
    with ThreadPoolExecutor(1) as pool:
        ahead = deque(pool.submit(prepare, batch) for batch in batches[:PREFETCH])  # bounded: memory stays flat
        for n, batch in enumerate(tqdm(batches, desc="generating", unit="batch")):
            inputs, sources = ahead.popleft().result()
            if n + PREFETCH < len(batches):
                ahead.append(pool.submit(prepare, batches[n + PREFETCH]))
            processors = LogitsProcessorList()
            if extractive:
                processors.append(CopySpan(source_tensor(sources).to(model.device), tokenizer.eos_token_id,
                                           prompt_length))
            output = model.generate(**inputs.to(model.device), max_new_tokens=max_new_tokens, num_beams=1,
                                    do_sample=False, logits_processor=processors).cpu().numpy()
            for j, (i, row) in enumerate(zip(batch, output[:, prompt_length:])):
                stop = np.flatnonzero((row == tokenizer.eos_token_id) | (row == tokenizer.pad_token_id))
                ids = row[:stop[0] if len(stop) else len(row)]
                answer_ids[i] = ids.tolist()
                if extractive:
                    texts[i] = spans.copied_text(ids, sources[j], contexts[i])
                    assert texts[i] is not None, "CopySpan let through tokens its window does not hold"
                else:
                    texts[i] = " ".join(tokenizer.decode(ids, skip_special_tokens=True).split())
    return texts, answer_ids


@torch.inference_mode()
def answer_log_probs(model, tokenizer, input_ids, answer_ids, batch_size):
    """log P(answer </s> | input) under the model for each (input, answer tokens) pair, unconstrained
    by CopySpan: comparable between inputs, e.g. the windows of one long context."""
    if not answer_ids:
        return []
    model.eval()
    labels = [ids + [tokenizer.eos_token_id] for ids in answer_ids]
    order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))
    scores = [None] * len(input_ids)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        inputs = tokenizer.pad({"input_ids": [input_ids[i] for i in batch]}, return_tensors="pt").to(model.device)
        target = tokenizer.pad({"input_ids": [labels[i] for i in batch]}, return_tensors="pt").to(model.device)
        target = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
        logits = model(**inputs, labels=target).logits.float()
        token_log_probs = logits.log_softmax(-1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
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
    windows) and decoded as the evaluate stage decodes the test split."""
    per_question = windows.split(tokenizer, questions, contexts, tokenize_params["max_source_length"],
                                 tokenize_params["stride"])
    ids = [i for i, question_windows in enumerate(per_question) for _ in question_windows]
    chosen = answer(model, tokenizer, ids, [(w.input_ids, w.offsets) for ws in per_question for w in ws],
                    [contexts[i] for i in ids], evaluate_params["batch_size"], evaluate_params["max_new_tokens"],
                    evaluate_params["extractive"])
    return [chosen[i][0] for i in range(len(questions))]


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
