"""Model and tokenizer: load a checkpoint (Hub id or local folder) or build a small T5 from scratch."""

import functools
import re
import types
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList,
                          PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration)
from transformers.integrations import sdpa_attention
from transformers.models.t5.modeling_t5 import T5DenseActDense, T5DenseGatedActDense

from stages import hub
from stages.errors import InputError

SCRATCH = "scratch"
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # T5's ids: pad 0, eos 1, unk 2
PREFETCH = 2  # generation batches padded ahead of the one the model answers


def is_scratch(model_params):
    return model_params["name"] == SCRATCH


def train_tokenizer(texts, vocab_size):
    """A SentencePiece-style BPE tokenizer (words marked with ▁, punctuation split off), T5's special ids.

    BPE, not Unigram: on this project's templated data the Unigram trainer split the most frequent
    words into letters ("▁w as"), doubling input lengths (README, "Tokenizer"). Saved as a generic
    fast tokenizer, since transformers 5's T5Tokenizer only rebuilds Unigram vocabularies.
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                                             show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")


def load_tokenizer(name):
    return from_pretrained(AutoTokenizer, name)


def avoid_cudnn_attention():
    """PyTorch's first choice of SDPA kernel on Hopper GPUs, cuDNN's, builds a graph for every new input
    shape: with batches of varying length it spent ~12 ms of CPU per call on an H100 (bench/README.md).
    The memory-efficient kernel takes T5's position bias as well, without that cost."""
    torch.backends.cuda.enable_cudnn_sdp(False)


def merge_position_bias_once():
    """transformers merges T5's position bias and the padding (or causal) mask into one (batch, heads,
    queries, keys) tensor in every layer, though the first layer of a stack hands the same two tensors
    to all the others. This merges them once per stack and forward, the result kept on the position bias
    tensor (and freed with it): on an H100 training 5%, generation 9% faster (bench/README.md). Every
    forward number is the same; the bias's gradient sums its layers' parts in another order (README,
    "The bundled data"). For the whole process: it patches transformers' function, once.
    """
    merge = sdpa_attention.create_position_bias_mask
    if getattr(merge, "once_per_stack", False):
        return

    @functools.wraps(merge)  # transformers' own stays reachable, as __wrapped__
    def merge_once(position_bias, attention_mask, is_causal, query, key):
        merged = getattr(position_bias, "merged_mask", None)
        if merged is None or merged[0] is not attention_mask or merged[1] != is_causal:
            merged = attention_mask, is_causal, merge(position_bias, attention_mask, is_causal, query, key)
            position_bias.merged_mask = merged
        return merged[2]
    merge_once.once_per_stack = True
    sdpa_attention.create_position_bias_mask = merge_once


def skip_fp32_round_trip(model):
    """Under autocast, T5's feed-forward layers cast their activations to `wo`'s dtype (fp32 when training:
    fp32 weights), and autocast casts them straight back to bf16 for the product: two copies of the
    widest activation each way, bit for bit the identity. These layers skip both under autocast
    (training 10% faster and 9% less memory on an H100, bench/README.md), and run as written without.
    T5's classes only: mT5's have their own and run as written."""
    for layer in model.modules():
        if isinstance(layer, (T5DenseActDense, T5DenseGatedActDense)):
            layer.forward = types.MethodType(autocast_forward, layer)  # bound: a deepcopy binds to its copy
    return model


def autocast_forward(layer, hidden_states):
    if not torch.is_autocast_enabled(hidden_states.device.type):
        return type(layer).forward(layer, hidden_states)
    if isinstance(layer, T5DenseGatedActDense):
        hidden_states = layer.act(layer.wi_0(hidden_states)) * layer.wi_1(hidden_states)
    else:
        hidden_states = layer.act(layer.wi(hidden_states))
    return layer.wo(layer.dropout(hidden_states))


def tuned(model):
    """The model with the three speed-ups above, as every stage runs it (the first two for the process)."""
    avoid_cudnn_attention()
    merge_position_bias_once()
    return skip_fp32_round_trip(model)


def build_model(model_params, tokenizer):
    """A new T5 sized by model.scratch, or the checkpoint model.name names, to train."""
    if not is_scratch(model_params):
        return tuned(from_pretrained(AutoModelForSeq2SeqLM, model_params["name"], use_safetensors=True,
                                     attn_implementation="sdpa"))
    size = model_params["scratch"]
    if size["d_model"] % size["num_heads"]:
        raise InputError(f"model.scratch.d_model ({size['d_model']}) must be divisible by "
                         f"model.scratch.num_heads ({size['num_heads']})")
    config = T5Config(vocab_size=len(tokenizer), d_model=size["d_model"], d_ff=size["d_ff"],
                      d_kv=size["d_model"] // size["num_heads"], num_heads=size["num_heads"],
                      num_layers=size["num_layers"], num_decoder_layers=size["num_layers"],
                      feed_forward_proj=size["feed_forward_proj"], dropout_rate=size["dropout"],
                      # transformers 5 leaves these unset on a bare T5Config
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, attn_implementation="sdpa")
    return tuned(T5ForConditionalGeneration(config))


def from_pretrained(cls, name, **kwargs):
    folder = hub.local_path(name, "model.name")
    if folder is None:
        hub.require_hub(name, "model.name", "point model.name at a local checkpoint folder")
    try:  # never a checkpoint's own code: left unset, transformers would ask on a terminal whether to run it
        return cls.from_pretrained(folder or name, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as e:
        raise InputError(f"model.name = {name!r}: cannot load {cls.__name__} ({str(e).splitlines()[0]})") from None


def load_trained(folder):
    """The model and tokenizer the train stage saved in `folder`: on the GPU in bf16 when there is one."""
    if not (folder / "config.json").exists():
        raise InputError(f"{folder}/ holds no trained model: run `dvc repro` (or `dvc pull`) first")
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, use_safetensors=True, trust_remote_code=False,
                                                  attn_implementation="sdpa",
                                                  dtype=torch.bfloat16 if bf16_supported() else torch.float32)
    return tuned(model).to(device()), tokenizer


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported():
    """bf16 where a GPU computes it natively; T5 must never run in fp16 (its activations overflow)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


class CopySpan(LogitsProcessor):
    """Extractive decoding: each answer is a span of its input's tokens, then </s>.

    After a generated prefix only the tokens that follow that prefix somewhere in the input stay
    allowed (a SQuAD answer is a span of its context), so a model that has learned to copy but mixes
    up two names ("Danrenwy Danfapel" for "Danrenwy Zanhel") is steered to a span that exists; </s>
    may end the answer at any point (at once: SQuAD v2's "no answer"). `spans` holds one or more
    token sequences per row, separated by -1: the input, and the input re-tokenized with spaces
    around punctuation, since "(Danjunstad)" splits differently from the answer "Danjunstad" alone.
    The decoder's first `prompt_length` tokens (T5: <pad>; BART: </s> and the forced <s>) are left
    alone. A few tensor operations per generated token for the whole batch, none waiting for the GPU.
    """

    def __init__(self, spans, eos_token_id, prompt_length):
        self.spans, self.eos_token_id, self.prompt_length = spans, eos_token_id, prompt_length

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] < self.prompt_length:
            return scores
        prefix = input_ids[:, self.prompt_length:]
        source = self.spans.repeat_interleave(input_ids.shape[0] // self.spans.shape[0], dim=0)  # beams
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


def copyable_spans(tokenizer, input_ids):
    """CopySpan's token sequences for a batch of inputs: each input without special tokens, then -1,
    then its text re-tokenized with spaces around punctuation (how an answer alone is tokenized)."""
    texts = tokenizer.batch_decode(input_ids, skip_special_tokens=True)
    respaced = tokenizer([re.sub(r"([^\w\s])", r" \1 ", text) for text in texts], add_special_tokens=False)
    rows = list(zip(input_ids, respaced["input_ids"]))
    spans = np.full((len(rows), max(len(ids) + 1 + len(again) for ids, again in rows)), -1, dtype=np.int64)
    for span, (ids, again) in zip(spans, rows):
        span[:len(ids)] = ids
        span[len(ids) + 1:len(ids) + 1 + len(again)] = again
    spans[np.isin(spans, tokenizer.all_special_ids)] = -1
    return torch.from_numpy(spans)


@torch.inference_mode()
def generate(model, tokenizer, input_ids, batch_size, max_new_tokens, extractive=False):
    """Greedy answers for lists of token ids, in their order; batches of similar length waste no padding.
    extractive: answers may only copy spans of their input (CopySpan). A thread pads the next batches
    (and finds their spans) while the model answers this one, so the GPU does not wait for the CPU."""
    model.eval()
    prompt_length = 1 + (model.generation_config.forced_bos_token_id is not None)
    order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]

    def prepare(batch):
        batch_ids = [input_ids[i] for i in batch]
        inputs = tokenizer.pad({"input_ids": batch_ids}, return_tensors="pt")
        return inputs, copyable_spans(tokenizer, batch_ids) if extractive else None

    answers = [None] * len(input_ids)
    with ThreadPoolExecutor(1) as pool:
        ahead = deque(pool.submit(prepare, batch) for batch in batches[:PREFETCH])  # bounded: memory stays flat
        for n, batch in enumerate(tqdm(batches, desc="generating", unit="batch")):
            inputs, spans = ahead.popleft().result()
            if n + PREFETCH < len(batches):
                ahead.append(pool.submit(prepare, batches[n + PREFETCH]))
            processors = LogitsProcessorList()
            if extractive:
                processors.append(CopySpan(spans.to(model.device), tokenizer.eos_token_id, prompt_length))
            output = model.generate(**inputs.to(model.device), max_new_tokens=max_new_tokens, num_beams=1,
                                    do_sample=False, logits_processor=processors)
            for i, text in zip(batch, tokenizer.batch_decode(output, skip_special_tokens=True)):
                answers[i] = " ".join(text.split())
    return answers


@torch.inference_mode()
def answer_log_probs(model, tokenizer, input_ids, answers, batch_size):
    """log P(answer </s> | input) under the model for each (input, answer text) pair, unconstrained by
    CopySpan: comparable between inputs, e.g. the windows of one long context."""
    if not answers:
        return []
    model.eval()
    labels = tokenizer(text_target=answers)["input_ids"]
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
