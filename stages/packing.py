"""Padding-free training for T5 on a GPU (train.packing): several examples share a row, each seeing only itself.

Rows are filled with as many examples as fit (best fit, longest first, once); each epoch deals the rows
into batches in a new order. Every batch has the same shape, so nothing is padded per example and
compiled kernels are reused. FlexAttention keeps the examples apart: attention within an example only
(causal in the decoder; cross-attention to its own source), plus T5's relative position bias, whose
distances within an example are the same at any offset in a row. Training loss and gradients equal the
unpacked model's (tests/test_packing.py), except that attention probabilities get no dropout
(FlexAttention has none).
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
BLOCK = 128  # FlexAttention's block; rows are whole blocks (its gradients can be NaN otherwise: PyTorch #153799)


def row_lengths(sources, targets, headroom=2.0):
    """Source and target tokens of a row, in whole blocks: a target row holds the longest target (one block,
    as a rule); a source row's examples have on average 1/headroom of that in targets, and it holds the
    longest source."""
    def blocks(n):
        return BLOCK * -(-n // BLOCK)
    target = blocks(max(map(len, targets)))
    sources_per_target = sum(map(len, sources)) / sum(map(len, targets))
    source = BLOCK * int(target * sources_per_target / headroom // BLOCK)
    return max(source, blocks(max(map(len, sources)))), target


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
        if room - s and rows[row][1]:
            bisect.insort(rooms, (room - s, row))
    return [examples for examples, _ in rows]


class PackedRows(torch.utils.data.Dataset):
    """Training examples (source and target token ids, each ending in </s>) packed into rows of these
    lengths; item r is row r's tensors, and item len(rows) a row of padding alone (see PackedBatches)."""

    def __init__(self, sources, targets, source_length, target_length):
        self.sources, self.targets = sources, targets
        self.source_length, self.target_length = source_length, target_length
        self.rows = pack([len(s) for s in sources], [len(t) for t in targets], source_length, target_length)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, r):
        if not 0 <= r <= len(self.rows):
            raise IndexError(f"row {r} of {len(self.rows)} (and one of padding)")
        ids, source_segments, decoder_ids, target_segments, labels = [], [], [], [], []
        for segment, i in enumerate(self.rows[r] if r < len(self.rows) else []):
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

    def real_shares(self):
        """Shares of the rows' source and target tokens that are examples' tokens, not padding."""
        rows = len(self.rows)
        return (sum(map(len, self.sources)) / (rows * self.source_length),
                sum(map(len, self.targets)) / (rows * self.target_length))


class PackedBatches:
    """Batches of `size` of `count` rows, dealt in a new order each epoch (from seed and epoch), the last
    filled up with rows of padding (index `count`), so every batch has one shape. Their number is the
    same every epoch, as the Trainer's learning-rate schedule needs."""

    def __init__(self, count, size, seed):
        self.count, self.size, self.seed, self.epoch = count, size, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        order = list(range(self.count))
        random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        order += [self.count] * (-len(order) % self.size)
        return iter([order[i:i + self.size] for i in range(0, len(order), self.size)])

    def __len__(self):
        return -(-self.count // self.size)


def collate(rows):
    return {key: torch.stack([row[key] for row in rows]) for key in KEYS}


def enable(model):
    """The model's forward also takes packed batches (the keys of collate); any other call runs T5's own.
    Patched on the instance, so the Trainer, accelerate's wrappers and generation all call it as before."""
    if not isinstance(model, T5ForConditionalGeneration):
        raise InputError(f"train.packing: packed rows are built for T5's attention, not {type(model).__name__}'s; "
                         "set train.packing: false")
    plain = model.forward

    @functools.wraps(type(model).forward)  # T5's signature: the Trainer keeps the dataset columns it names
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

    def block_mask(mask, q_length, kv_length):  # compiled on a GPU: no (rows, queries, keys) tensors in memory
        return create_block_mask(mask, rows, None, q_length, kv_length, device=device, _compile=device.type == "cuda")

    def within(segments, causal=False):
        def mask(b, h, q, kv):
            same = segments[b, q] == segments[b, kv]
            return same & (q >= kv) if causal else same
        return block_mask(mask, segments.shape[1], segments.shape[1])

    def to_own_source(b, h, q, kv):  # decoder padding reads every source token, so no softmax is empty
        return (target_segments[b, q] == source_segments[b, kv]) | (target_segments[b, q] == PAD_SEGMENT)

    encoded = stack(model.encoder, input_ids, within(source_segments))
    decoded = stack(model.decoder, decoder_input_ids, within(target_segments, causal=True), encoded,
                    block_mask(to_own_source, target_length, source_length))
    if model.config.scale_decoder_outputs:  # tied embeddings: T5 scales before its LM head
        decoded = decoded * model.model_dim ** -0.5
    # every target position, padding too (its label -100 is ignored): one shape, and no wait for the GPU
    logits = model.lm_head(decoded)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


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
