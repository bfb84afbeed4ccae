"""Padding-free training for T5 on a GPU (train.packing): several examples share a row, each seeing only itself.

Rows of max_source_length source tokens, and of a target length sized from the data, are filled with as
many examples as fit (best fit, longest first, once); each epoch deals the rows into batches in a new
order. Every batch then has the same shape, so nothing is padded per example and compiled kernels are
reused. FlexAttention keeps the examples apart: attention within an example only (causal in the decoder;
cross-attention to its own source), plus T5's relative position bias, whose distances within an example
are the same at any offset in a row. Training loss and gradients equal the unpacked model's
(tests/test_packing.py), except that attention probabilities get no dropout (FlexAttention has none).
"""

import bisect
import functools
import random
import types

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from transformers import T5ForConditionalGeneration
from transformers.modeling_outputs import Seq2SeqLMOutput

from stages.errors import InputError

PAD_SEGMENT = -1  # padding is a segment of its own: no row of attention is ever empty
KEYS = ("input_ids", "source_segments", "decoder_input_ids", "target_segments", "labels")


def row_target_length(sources, targets, source_length, headroom=2.0):
    """A row's target tokens: `headroom` times a full row's share of the data's targets, in multiples of 8,
    and never less than the longest target (which must fit in a row of its own)."""
    share = source_length * sum(map(len, targets)) / sum(map(len, sources))
    return max(max(map(len, targets)), 8 * -(-int(headroom * share) // 8))


def pack(source_lengths, target_lengths, source_length, target_length):
    """Rows of example indices within both lengths: each example, longest source first, goes to the row
    whose source room fits it most tightly and has room for its target too (best fit decreasing)."""
    rooms, rows = [], []  # rooms sorted ascending: (source room, row number); rows: [examples, target room]
    for i in sorted(range(len(source_lengths)), key=lambda i: -source_lengths[i]):
        s, t = source_lengths[i], target_lengths[i]
        if s > source_length or t > target_length:
            raise ValueError(f"example {i} ({s} source, {t} target tokens) is longer than a row")
        at = bisect.bisect_left(rooms, (s, -1))
        while at < len(rooms) and rows[rooms[at][1]][1] < t:
            at += 1
        if at == len(rooms):
            rows.append([[], target_length])
            room, row = source_length, len(rows) - 1
        else:
            room, row = rooms.pop(at)
        rows[row][0].append(i)
        rows[row][1] -= t
        if room - s:
            bisect.insort(rooms, (room - s, row))
    return [examples for examples, _ in rows]


class PackedRows(torch.utils.data.Dataset):
    """Training examples (source and target token ids, each ending in </s>) packed into rows; item r is
    row r's tensors."""

    def __init__(self, sources, targets, source_length, target_length=None):
        self.sources, self.targets, self.source_length = sources, targets, source_length
        self.target_length = target_length or row_target_length(self.sources, self.targets, source_length)
        self.rows = pack([len(s) for s in self.sources], [len(t) for t in self.targets], source_length,
                         self.target_length)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, r):
        ids, source_segments, decoder_ids, target_segments, labels = [], [], [], [], []
        for segment, i in enumerate(self.rows[r]):
            source, target = self.sources[i], self.targets[i]
            ids += source
            source_segments += [segment] * len(source)
            decoder_ids += [0] + target[:-1]  # shifted right: T5 starts decoding with the pad id
            target_segments += [segment] * len(target)
            labels += target

        def padded(values, length, fill):
            return torch.tensor(values + [fill] * (length - len(values)))
        s, t = self.source_length, self.target_length
        return {"input_ids": padded(ids, s, 0), "source_segments": padded(source_segments, s, PAD_SEGMENT),
                "decoder_input_ids": padded(decoder_ids, t, 0),
                "target_segments": padded(target_segments, t, PAD_SEGMENT), "labels": padded(labels, t, -100)}

    def fill(self):
        """Shares of source and target row tokens that are real tokens, not padding."""
        rows = len(self.rows)
        return (sum(map(len, self.sources)) / (rows * self.source_length),
                sum(map(len, self.targets)) / (rows * self.target_length))


class PackedBatches:
    """Batches of `rows` rows, dealt in a new order each epoch (from seed and epoch); the last may be
    short. Their number is the same every epoch, as the Trainer's learning-rate schedule needs."""

    def __init__(self, count, rows, seed):
        self.order, self.size, self.seed, self.epoch = list(range(count)), rows, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        order = self.order[:]
        random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        return iter([order[i:i + self.size] for i in range(0, len(order), self.size)])

    def __len__(self):
        return -(-len(self.order) // self.size)


def collate(rows):
    return {key: torch.stack([row[key] for row in rows]) for key in KEYS}


def enable(model):
    """The model's forward also takes packed batches (the keys of collate); any other call runs T5's own.
    Patched on the instance, so the Trainer, accelerate's wrappers and generation all call it as before."""
    if not isinstance(model, T5ForConditionalGeneration):
        raise InputError(f"train.packing: packed rows are built for T5's attention, not {type(model).__name__}'s; "
                         "set train.packing: false")
    plain = model.forward

    @functools.wraps(plain)  # T5's signature: the Trainer keeps the dataset columns it names
    def forward(self, *args, **batch):
        if "source_segments" not in batch:
            return plain(*args, **batch)
        return Seq2SeqLMOutput(loss=packed_loss(self, **{key: batch[key] for key in KEYS}))
    model.forward = types.MethodType(forward, model)
    return model


def packed_loss(model, input_ids, source_segments, decoder_input_ids, target_segments, labels):
    """Mean cross-entropy over the batch's target tokens, as T5ForConditionalGeneration computes it unpacked."""
    rows, source_length = input_ids.shape
    target_length = decoder_input_ids.shape[1]
    device = input_ids.device

    def within(q_segments, kv_segments, causal=False):
        def mask(b, h, q, kv):
            same = q_segments[b, q] == kv_segments[b, kv]
            return same & (q >= kv) if causal else same
        return create_block_mask(mask, rows, None, q_segments.shape[1], kv_segments.shape[1], device=device)

    def to_own_source(b, h, q, kv):  # decoder padding reads every source token, so no softmax is empty
        return (target_segments[b, q] == source_segments[b, kv]) | (target_segments[b, q] == PAD_SEGMENT)

    cross = create_block_mask(to_own_source, rows, None, target_length, source_length, device=device)
    encoded = stack(model.encoder, input_ids, within(source_segments, source_segments))
    decoded = stack(model.decoder, decoder_input_ids, within(target_segments, target_segments, causal=True),
                    encoded, cross)
    if model.config.scale_decoder_outputs:  # tied embeddings: T5 scales before its LM head
        decoded = decoded * model.model_dim ** -0.5
    targets = labels != -100
    return F.cross_entropy(model.lm_head(decoded[targets]), labels[targets])


def stack(t5_stack, ids, self_mask, memory=None, cross_mask=None):
    """A T5Stack's forward on packed rows, with its own modules and weights; the first block's relative
    position bias serves every block, as in T5."""
    first = t5_stack.block[0].layer[0].SelfAttention
    length = ids.shape[1]
    bias = first.compute_bias(length, length, device=ids.device)[0]  # (heads, queries, keys)
    hidden = t5_stack.dropout(t5_stack.embed_tokens(ids))
    for block in t5_stack.block:
        self_attention = block.layer[0]
        hidden = hidden + self_attention.dropout(attend(self_attention.SelfAttention,
                                                        self_attention.layer_norm(hidden), None, self_mask, bias))
        if memory is not None:
            cross = block.layer[1]
            hidden = hidden + cross.dropout(attend(cross.EncDecAttention, cross.layer_norm(hidden), memory,
                                                   cross_mask, None))
        hidden = block.layer[-1](hidden)  # T5LayerFF: norm, feed-forward, dropout, residual
    return t5_stack.dropout(t5_stack.final_layer_norm(hidden))


def attend(attention, hidden, memory, block_mask, bias):
    """A T5Attention's projections around FlexAttention: scores unscaled, plus the position bias if any."""
    memory = hidden if memory is None else memory
    heads = attention.n_heads

    def split(x):  # (rows, length, heads * d_kv) -> (rows, heads, length, d_kv)
        return x.unflatten(-1, (heads, -1)).transpose(1, 2)

    def add_bias(score, b, h, q, kv):
        return score + bias[h, q, kv]

    out = flex(hidden.is_cuda)(split(attention.q(hidden)), split(attention.k(memory)), split(attention.v(memory)),
                               score_mod=None if bias is None else add_bias, block_mask=block_mask, scale=1.0)
    return attention.o(out.transpose(1, 2).flatten(2))


@functools.cache
def flex(cuda):
    """FlexAttention's fused kernel (compiled, once per shape) on a GPU; its reference code elsewhere."""
    return torch.compile(flex_attention, dynamic=False) if cuda else flex_attention
