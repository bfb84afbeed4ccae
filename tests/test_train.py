"""The train stage's fast Trainer settings must learn what a plain fp32 setup learns."""

import logging
import os
import random
import string
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import safetensors.torch
import torch
import transformers
from torch._dynamo.utils import counters
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, T5Config, \
    T5ForConditionalGeneration, T5Tokenizer, TrainerCallback

from stages import decoding, modeling, squad, tokenize, train, vocabulary
from tests.conftest import SQUAD_SAMPLE, T5_SMALL_TOKENIZER, T5_SMALL_VOCAB

ROOT = Path(__file__).resolve().parent.parent

MAX_SOURCE = 24
# compile: the stages compile by default; the tests that are not about the numerics skip its minute of compiling
HP = {"lr": 1e-2, "epochs": 8, "batch_size": 8, "warmup_steps": 2, "weight_decay": 0.0, "compile": False}


def rows():
    """Sources of mixed lengths; the target is the source's first three tokens, so the loss falls."""
    rng = random.Random(0)
    out = []
    for _ in range(64):
        source = [rng.randrange(3, 60) for _ in range(rng.randint(6, MAX_SOURCE - 1))]
        out.append({"input_ids": source + [1], "labels": source[:3] + [1]})
    return out


def tiny_t5(attention):
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=32, d_ff=64, d_kv=16, num_heads=2,
                                               num_layers=1, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                                               decoder_start_token_id=0, attn_implementation=attention))


def losses(trainer):
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def plain_losses(tmp_path):
    """The textbook setup: fp32, eager attention, unfused AdamW, every input padded to the same length."""
    padded = [{"input_ids": r["input_ids"] + [0] * (MAX_SOURCE - len(r["input_ids"])),
               "attention_mask": [1] * len(r["input_ids"]) + [0] * (MAX_SOURCE - len(r["input_ids"])),
               "labels": r["labels"]} for r in rows()]
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "plain"), learning_rate=HP["lr"],
                                    num_train_epochs=HP["epochs"], per_device_train_batch_size=HP["batch_size"],
                                    warmup_steps=HP["warmup_steps"], optim="adamw_torch",
                                    train_sampling_strategy="sequential", logging_steps=1, report_to="none",
                                    save_strategy="no", seed=0)
    return losses(Seq2SeqTrainer(model=tiny_t5("eager"), args=args, train_dataset=padded))


def fast_losses(tmp_path, attention="eager", **overrides):
    """stages.train's settings, compiled as by default; batches in the same order as the plain run, so only
    the numerics differ. The Trainer trains with T5's eager attention on a CPU; "sdpa" is a GPU's choice."""
    tokenizer = vocabulary.train_tokenizer(["pad"], 100)
    model = modeling.tuned(tiny_t5("sdpa"))
    args = train.training_arguments({**HP, "compile": True}, 0, tmp_path / "fast", train_sampling_strategy="sequential",
                                    logging_steps=1, report_to="none", **overrides)
    trainer = train.QATrainer(model=model, args=args, train_dataset=rows(), processing_class=tokenizer,
                              data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
    assert model.config._attn_implementation == "eager"  # chosen for compiled CPU training
    model.set_attn_implementation(attention)
    torch._dynamo.reset()  # compiled here, not reused from another test
    counters.clear()
    result = losses(trainer)
    assert counters["stats"]["unique_graphs"] == 1  # compiled, once for every batch length
    return result


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return plain_losses(tmp_path_factory.mktemp("plain"))


def test_the_loss_falls(plain):
    assert plain[-1] < 0.6 * plain[0]


def test_fast_settings_follow_the_plain_fp32_loss_step_by_step(plain, tmp_path):
    fast = fast_losses(tmp_path)
    assert len(fast) == len(plain)
    assert fast == pytest.approx(plain, rel=1e-4)  # fused AdamW, compiled, dynamic padding: 2.5e-6 measured


def test_bf16_autocast_reaches_the_same_loss(plain, tmp_path):
    # compiled bf16 with SDPA, as on a GPU (the CPU has bf16 autocast too)
    fast = fast_losses(tmp_path, attention="sdpa", bf16=True, use_cpu=True)
    assert sum(fast[-4:]) / 4 == pytest.approx(sum(plain[-4:]) / 4, rel=0.02)  # 0.9% measured


def test_token_budget_batches_cover_every_example_once_within_budget():
    lengths = [random.Random(i).randint(5, 100) for i in range(500)]
    batches = train.TokenBudgetBatches(lengths, max_examples=64, max_tokens=1000, seed=0)
    epochs = []
    for epoch in range(3):
        batches.set_epoch(epoch)
        epoch_batches = list(batches)
        assert len(epoch_batches) == len(batches)  # the same number every epoch
        assert sorted(i for b in epoch_batches for i in b) == list(range(500))
        for b in epoch_batches:
            assert len(b) <= 64 and len(b) * max(lengths[i] for i in b) <= 1000
        epochs.append(epoch_batches)
    assert epochs[0] != epochs[1]
    short = [b for b in epochs[0] if max(lengths[i] for i in b) <= 15]
    long = [b for b in epochs[0] if min(lengths[i] for i in b) >= 90]
    assert min(map(len, short)) > max(map(len, long))  # short inputs in large batches, long in small


def test_an_input_longer_than_the_budget_is_a_batch_of_its_own():
    batches = list(train.TokenBudgetBatches([10, 10, 500, 10], max_examples=8, max_tokens=100, seed=0))
    assert sorted(map(sorted, batches)) == [[0, 1, 3], [2]]


def test_the_trainer_trains_on_token_budget_batches(tmp_path):
    tokenizer = vocabulary.train_tokenizer(["pad"], 100)
    model = tiny_t5("sdpa")
    args = train.training_arguments({**HP, "epochs": 2}, 0, tmp_path, report_to="none", logging_steps=1)
    trainer = train.QATrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows()),
                              processing_class=tokenizer,
                              data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), batch_tokens=64)
    loader = trainer.get_train_dataloader()
    sizes = [batch["input_ids"].shape for batch in loader]
    assert sum(n for n, _ in sizes) == 64 and all(n * length <= 64 or n == 1 for n, length in sizes)
    assert len(sizes) > 64 // HP["batch_size"]  # more, smaller batches than batch_size alone gives
    trainer.train()
    assert trainer.state.global_step == 2 * len(sizes)


def test_evaluation_keeps_the_loss_and_no_logits(tmp_path):
    tokenizer = vocabulary.train_tokenizer(["pad"], 100)
    model = tiny_t5("sdpa")
    args = train.training_arguments(HP, 0, tmp_path, report_to="none")
    trainer = train.QATrainer(model=model, args=args, processing_class=tokenizer,
                              data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
    output = trainer.predict(datasets.Dataset.from_list(rows()))
    assert output.predictions is None and output.metrics["test_loss"] > 0


def test_the_last_checkpoint_is_the_newest_that_every_process_finished(tmp_path):
    def checkpoint(step, state='{"global_step": 1}', ranks=(0, 1)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(state)
        for rank in ranks:
            (folder / f"rng_state_{rank}.pth").write_bytes(b"")
    checkpoint(10)
    checkpoint(20)
    checkpoint(30, ranks=(0,))  # killed before process 1 saved its random state
    checkpoint(40, state='{"global_st')  # killed while the main process wrote its state
    (tmp_path / "checkpoint-50").mkdir()  # killed before anything was written
    assert train.last_checkpoint(tmp_path, processes=2) == tmp_path / "checkpoint-20"
    assert train.last_checkpoint(tmp_path, processes=1) is None  # one process writes rng_state.pth
    assert train.last_checkpoint(tmp_path / "none", processes=1) is None


class StopAfterFirstSave(TrainerCallback):
    """A run killed right after its first checkpoint."""

    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def test_validation_questions_are_answered_each_epoch_and_the_best_epoch_is_kept_across_a_resume(
        tmp_path, t5_tokenizer, caplog):
    rows = squad.read_file(SQUAD_SAMPLE / "validation.json").select(range(24)).remove_columns("problem")
    validation = tmp_path / "validation.jsonl"
    rows.to_json(validation, lines=True)  # as the prepare stage writes it
    encoded = datasets.Dataset.from_dict(tokenize.encode(rows[:], t5_tokenizer, 512, 16, 128))
    examples = encoded.select_columns(["input_ids", "attention_mask", "labels"])
    questions = train.ValidationQuestions(validation, 8, {"max_source_length": 512, "stride": 128},
                                          {"batch_size": 8, "max_new_tokens": 4, "extractive": True})
    assert len(questions.rows) == 8 and questions.rows["id"][1] == rows["id"][3]  # spread over the split

    def trainer(callbacks=()):
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=T5_SMALL_VOCAB, d_model=32, d_ff=64, d_kv=16, num_heads=2, num_layers=1, dropout_rate=0.0,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
        args = train.training_arguments({**HP, "lr": 3e-3, "epochs": 3}, 0, tmp_path / "run", report_to="none",
                                        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                                        metric_for_best_model="f1", save_total_limit=1)
        return train.QATrainer(model=model, args=args, train_dataset=examples, eval_dataset=examples,
                               processing_class=t5_tokenizer, validation_questions=questions, callbacks=list(callbacks),
                               data_collator=DataCollatorForSeq2Seq(t5_tokenizer, model=model))

    with pytest.raises(KeyboardInterrupt):
        trainer([StopAfterFirstSave()]).train()
    resumed = trainer()
    transformers.logging.enable_propagation()
    with caplog.at_level(logging.WARNING, logger="transformers"):
        resumed.train(resume_from_checkpoint=str(train.last_checkpoint(tmp_path / "run")))
    assert not [r for r in caplog.records if "missing keys" in r.getMessage()]  # tied embeddings are not missing
    evaluations = [entry for entry in resumed.state.log_history if "eval_loss" in entry]
    assert [entry["epoch"] for entry in evaluations] == [1, 2, 3]  # the first one from before the kill
    for entry in evaluations:
        assert {"eval_exact_match", "eval_f1", "eval_rougeL"} <= set(entry) and 0 <= entry["eval_f1"] <= 100
    best = max(evaluations, key=lambda entry: entry["eval_f1"])
    assert resumed.state.best_metric == best["eval_f1"]
    assert resumed.state.best_model_checkpoint.endswith(f"checkpoint-{best['step']}")
    kept = safetensors.torch.load_file(f"{resumed.state.best_model_checkpoint}/model.safetensors")
    assert all(torch.equal(kept[name], value) for name, value in resumed.model.state_dict().items() if name in kept)


def test_accumulated_and_multi_process_losses_are_means_not_sums(tmp_path):
    """T5's loss is its batch's mean: the Trainer must average micro-batches itself. Told the model counts
    tokens itself, it would log (and clip, and under DDP multiply by the process count) sums."""
    tokenizer = vocabulary.train_tokenizer([string.ascii_letters + string.digits], 100)  # ids of rows() < 64
    size = {"d_model": 32, "d_ff": 64, "num_heads": 2, "num_layers": 1, "feed_forward_proj": "relu", "dropout": 0.0}
    data = [{"input_ids": r["input_ids"], "labels": r["input_ids"][:3] + [1]} for r in rows()[:8]]  # equal targets

    def first_loss(batch_size, accumulation):
        torch.manual_seed(0)
        model = modeling.build_model({"name": "scratch", "scratch": size}, tokenizer)
        args = train.training_arguments({**HP, "batch_size": batch_size}, 0, tmp_path / str(accumulation),
                                        gradient_accumulation_steps=accumulation, max_steps=1, logging_steps=1,
                                        train_sampling_strategy="sequential", report_to="none")
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                 data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
        assert not trainer.model_accepts_loss_kwargs
        trainer.train()
        return trainer.state.log_history[0]["loss"]
    assert first_loss(4, 2) == pytest.approx(first_loss(8, 1), rel=1e-5)


FSDP_PROCESS = """
import json, sys
import torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from transformers.models.t5.modeling_t5 import T5Block
from stages import train
from tests.test_train import answers, validation_model_and_questions

dist.init_process_group("gloo")
model, tokenizer, questions = validation_model_and_questions(sys.argv[1])
for block in [m for m in model.modules() if isinstance(m, T5Block)] + [model]:  # as accelerate's FSDP2 wraps T5
    fully_shard(block)
answering = train.answering_model(model)  # every process
result = [[questions.scores(answering, tokenizer), answers(answering, tokenizer, questions),
           answering.state_dict()] if answering is not None else None]
dist.broadcast_object_list(result)
if dist.get_rank() == 1:
    torch.save(result[0], sys.argv[2])
dist.destroy_process_group()
"""


def validation_model_and_questions(validation):
    """A tiny T5 on t5-small's tokenizer that always answers, and 8 validation questions of the real sample."""
    tokenizer = T5Tokenizer.from_pretrained(T5_SMALL_TOKENIZER)
    torch.manual_seed(0)
    model = modeling.tuned(T5ForConditionalGeneration(T5Config(
        vocab_size=T5_SMALL_VOCAB, d_model=32, d_ff=64, d_kv=16, num_heads=2, num_layers=2, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)))
    model.generation_config.min_new_tokens = 2  # untrained, it would say </s> at once
    questions = train.ValidationQuestions(validation, 8, {"max_source_length": 128, "stride": 32},
                                          {"batch_size": 4, "max_new_tokens": 4, "extractive": True})
    return model, tokenizer, questions


def answers(model, tokenizer, questions):
    return decoding.answer_questions(model, tokenizer, questions.rows["question"], questions.rows["context"],
                                     questions.tokenize_params, questions.evaluate_params)


def test_validation_questions_are_answered_under_fsdp_as_by_one_process(tmp_path):
    """Two CPU processes (gloo) with the model sharded by FSDP2, as `accelerate launch --use_fsdp` shards it
    on GPUs: every process gathers, the main one answers alone, and the scores are one process's."""
    validation = tmp_path / "validation.jsonl"
    squad.read_file(SQUAD_SAMPLE / "validation.json").remove_columns("problem").to_json(validation, lines=True)
    model, tokenizer, questions = validation_model_and_questions(validation)
    alone = questions.scores(model, tokenizer), answers(model, tokenizer, questions)
    (tmp_path / "fsdp_process.py").write_text(FSDP_PROCESS)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(tmp_path / "fsdp_process.py"), str(validation), str(tmp_path / "result.pt")],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    scores, sharded_answers, weights = torch.load(tmp_path / "result.pt")
    assert all(torch.equal(weights[name], value) for name, value in model.state_dict().items())
    assert (scores, sharded_answers) == alone and all(alone[1])


def test_compiling_on_a_cpu_without_a_c_compiler_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    run = subprocess.run([sys.executable, "-m", "stages.train"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "CXX": "no-such-compiler",
                              "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith(
        "error: train.compile: torch.compile on the CPU needs a C++ compiler")
    assert run.stderr.strip().splitlines()[-1].endswith("or set train.compile: false")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
