"""Packed rows must train the model exactly as unpacked batches do.

PyTorch refuses FlexAttention's backward on the CPU by a device check, though its reference code computes
it; the gradient tests lift that check (`cpu_backward`) to compare gradients here, where no GPU is.
"""

import inspect
import random
from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.attention.flex_attention
from transformers import DataCollatorForSeq2Seq, T5Config, T5ForConditionalGeneration

from stages import modeling, packing, params, train, vocabulary
from stages.errors import InputError

# the CPU runs FlexAttention's reference code, which warns that it is not the fused kernel
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"
HP = {"lr": 1e-2, "epochs": 6, "batch_size": 64, "warmup_steps": 2, "weight_decay": 0.0, "compile": False}


def examples(n=24, longest=40, seed=0):
    """Sources of mixed lengths; each target is its source's first tokens, so a model can learn it."""
    rng = random.Random(seed)
    sources = [[rng.randrange(3, 60) for _ in range(rng.randint(4, longest - 1))] + [1] for _ in range(n)]
    return sources, [source[:rng.randint(1, 4)] + [1] for source in sources]


def tiny_t5(feed_forward="relu", dropout=0.0):
    torch.manual_seed(0)
    return modeling.tuned(T5ForConditionalGeneration(T5Config(
        vocab_size=64, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, feed_forward_proj=feed_forward,
        dropout_rate=dropout, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, attn_implementation="sdpa")))


@pytest.fixture
def cpu_backward(monkeypatch):
    monkeypatch.setattr(torch.nn.attention.flex_attention, "_validate_device", lambda *tensors: None)


def every_row(rows):
    """One batch of all the rows (a PackedRows's item len(rows) is a padding row, so it is not iterated)."""
    return packing.collate([rows[r] for r in range(len(rows))])


def unpacked_batch(sources, targets):
    tokenizer = vocabulary.train_tokenizer(["pad"], 100)
    return DataCollatorForSeq2Seq(tokenizer)([{"input_ids": s, "labels": t} for s, t in zip(sources, targets)])


def test_rows_hold_every_example_once_within_both_lengths():
    sources, targets = examples(200, longest=60)
    rows = packing.PackedRows(sources, targets, 64, 12)
    assert sorted(i for row in rows.rows for i in row) == list(range(200))
    for row in rows.rows:
        assert sum(len(sources[i]) for i in row) <= 64 and sum(len(targets[i]) for i in row) <= 12
    assert rows.real_shares()[0] > 0.9  # best fit, longest first: little padding left


def test_best_fit_puts_each_example_in_the_tightest_row():
    # sources 6, 5, 4, 3, 2 into rows of 8: 6 opens a row (room 2), 5 another (3), 4 another (4),
    # 3 fits row 2 exactly, 2 fits row 1 exactly
    assert packing.pack([6, 5, 4, 3, 2], [1] * 5, 8, 8) == [[0, 4], [1, 3], [2]]
    # a row whose sources fit but whose targets do not is passed over
    assert packing.pack([4, 2, 2], [3, 3, 1], 8, 4) == [[0, 2], [1]]


def test_an_example_longer_than_a_row_is_an_error():
    with pytest.raises(ValueError, match="example 1"):
        packing.pack([3, 9], [1, 1], 8, 8)


def test_rows_are_whole_blocks_with_room_for_twice_their_share_of_targets_and_the_longest_example():
    # 20 source tokens a target token: a target block (128) is twice the targets of 1,280 source tokens
    assert packing.row_lengths([[1] * 100] * 2, [[1] * 5] * 2) == (1280, 128)
    assert packing.row_lengths([[1] * 100] * 2, [[1] * 5, [1] * 130]) == (128, 256)  # long target, few sources
    assert packing.row_lengths([[1] * 600, [1] * 10], [[1] * 50] * 2) == (640, 128)  # the longest source fits


def test_a_row_is_its_examples_end_to_end_with_decoder_inputs_shifted_per_example():
    rows = packing.PackedRows([[5, 6, 1], [7, 1]], [[8, 1], [9, 4, 1]], 8, 7)
    assert rows.rows == [[0, 1]]
    row = rows[0]
    assert row["input_ids"].tolist() == [5, 6, 1, 7, 1, 0, 0, 0]
    assert row["source_segments"].tolist() == [0, 0, 0, 1, 1, -1, -1, -1]
    assert row["labels"].tolist() == [8, 1, 9, 4, 1, -100, -100]
    assert row["decoder_input_ids"].tolist() == [0, 8, 0, 9, 4, 0, 0]
    assert row["target_segments"].tolist() == [0, 0, 1, 1, 1, -1, -1]
    padding = rows[1]  # one past the last row: padding alone, to fill a last batch
    assert padding["source_segments"].tolist() == [-1] * 8 and padding["labels"].tolist() == [-100] * 7
    with pytest.raises(IndexError):  # and no further, so iterating ends (after the padding row too)
        rows[2]
    assert len(list(rows)) == 2


def test_batches_deal_every_row_once_per_epoch_in_an_order_of_seed_and_epoch():
    batches = packing.PackedBatches(10, 4, seed=0)
    first = list(batches)
    assert len(batches) == len(first) == 3 and {len(batch) for batch in first} == {4}  # one shape
    assert sorted(sum(first, [])) == list(range(10)) + [10, 10]  # the last filled up with padding rows
    batches.set_epoch(1)
    second = list(batches)
    assert second != first and sorted(sum(second, [])) == list(range(10)) + [10, 10]
    batches.set_epoch(0)
    assert list(batches) == first == list(packing.PackedBatches(10, 4, seed=0))


@pytest.mark.parametrize("feed_forward", ["relu", "gated-gelu"])
def test_packed_loss_and_gradients_equal_the_unpacked_model(feed_forward, cpu_backward):
    sources, targets = examples()
    rows = packing.PackedRows(sources, targets, *packing.row_lengths(sources, targets))
    assert any(len(row) > 2 for row in rows.rows)  # several examples share rows
    packed = packing.enable(tiny_t5(feed_forward))
    loss = packed(**every_row(rows)).loss
    loss.backward()
    plain = tiny_t5(feed_forward)
    expected = plain(**unpacked_batch(sources, targets)).loss
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for (name, p), (_, q) in zip(packed.named_parameters(), plain.named_parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), name  # the position bias's too


def test_an_enabled_model_still_runs_t5s_own_forward_and_generates():
    sources, targets = examples(4)
    batch = unpacked_batch(sources, targets)
    packed, plain = packing.enable(tiny_t5()), tiny_t5()
    assert packed(**batch).loss.item() == plain(**batch).loss.item()
    ids = batch["input_ids"][:1]
    assert packed.generate(input_ids=ids, max_new_tokens=4).tolist() == plain.generate(input_ids=ids,
                                                                                       max_new_tokens=4).tolist()


def test_packing_is_for_t5_models():
    from transformers import BartConfig, BartForConditionalGeneration
    bart = BartForConditionalGeneration(BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                                                   encoder_attention_heads=2, decoder_attention_heads=2,
                                                   encoder_ffn_dim=16, decoder_ffn_dim=16))
    with pytest.raises(InputError, match="train.packing.*BartForConditionalGeneration"):
        packing.enable(bart)


def trained_losses(tmp_path, packed):
    """The train stage's settings on all the examples in one batch a step, packed or not, and eval losses."""
    sources, targets = examples(64)
    data = datasets.Dataset.from_dict({"input_ids": sources, "labels": targets, "attention_mask": [[1] * len(s)
                                                                                                  for s in sources]})
    tokenizer = vocabulary.train_tokenizer(["pad"], 100)
    model = tiny_t5()
    if packed:
        packing.enable(model)
    args = train.training_arguments(HP, 0, tmp_path, train_sampling_strategy="sequential", logging_steps=1,
                                    eval_strategy="epoch", report_to="none")
    trainer = train.QATrainer(model=model, args=args, train_dataset=data, eval_dataset=data.select(range(8)),
                              processing_class=tokenizer, data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
                              batch_tokens=64 * 40, packing=packed)
    trainer.train()
    return [(entry.get("loss"), entry.get("eval_loss")) for entry in trainer.state.log_history
            if "loss" in entry or "eval_loss" in entry]


def test_an_enabled_model_keeps_t5s_signature_for_the_trainers_column_choice():
    assert inspect.signature(packing.enable(tiny_t5()).forward) == inspect.signature(tiny_t5().forward)


def test_the_trainer_trains_packed_rows_as_it_trains_the_same_batch_unpacked(tmp_path, cpu_backward):
    packed = trained_losses(tmp_path / "packed", True)  # a Dataset: columns chosen by forward's signature
    plain = trained_losses(tmp_path / "plain", False)
    assert len(packed) == len(plain) == 2 * HP["epochs"]  # a training step and an evaluation each epoch
    assert [loss for pair in packed for loss in pair if loss] == pytest.approx(
        [loss for pair in plain for loss in pair if loss], rel=1e-4)
    assert packed[-2][0] < 0.8 * packed[0][0]


def test_packing_needs_a_token_budget(tmp_path):
    text = PARAMS.read_text().replace("packing: false", "packing: true")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(InputError, match="train.packing: packed batches hold train.batch_tokens"):
        params.load(tmp_path / "params.yaml")


def test_the_train_stage_refuses_packing_without_a_gpu(tmp_path, monkeypatch, capsys):
    text = PARAMS.read_text().replace("packing: false", "packing: true")
    text = text.replace("batch_tokens: 0", "batch_tokens: 4096").replace("compile: true", "compile: false")
    (tmp_path / "params.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stopped:
        train.main()
    assert stopped.value.code == 1
    assert capsys.readouterr().err.startswith("error: train.packing: FlexAttention trains on a CUDA GPU only")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_compiled_flex_attention_gives_the_reference_loss(monkeypatch):
    """The GPU's path, compiled (for the CPU here, forward only): same loss as FlexAttention's reference."""
    sources, targets = examples()
    batch = every_row(packing.PackedRows(sources, targets, *packing.row_lengths(sources, targets)))
    model = packing.enable(tiny_t5("gated-gelu")).eval()
    with torch.no_grad():
        reference = model(**batch).loss
        kernel = packing.flex.__wrapped__(True)  # what a GPU runs
        monkeypatch.setattr(packing, "flex", lambda cuda: kernel)
        compiled = model(**batch).loss
    assert compiled.item() == pytest.approx(reference.item(), rel=1e-5)
