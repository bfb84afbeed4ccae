"""Other seq2seq checkpoints through model.name: tiny local T5 v1.1 / Flan-T5, mT5 and BART folders made with
save_pretrained (what a Hub download leaves in the cache), run through tokenize, train and evaluate."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration, MT5Config, \
    MT5ForConditionalGeneration, T5Config, T5ForConditionalGeneration, T5Tokenizer

from stages import squad, vocabulary
from tests.conftest import SQUAD_SAMPLE, T5_SMALL_VOCAB, by_split

ROOT = Path(__file__).resolve().parent.parent
SPLITS = {"train": "train[:96]", "validation": "train[96:112]", "test": "validation[:16]"}
SPECIAL = dict(pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)  # the trained tokenizer's ids
TINY = dict(d_model=32, d_ff=64, d_kv=16, num_heads=2, num_layers=1, dropout_rate=0.0)
ARCHITECTURES = {
    # t5-v1.1 and flan-t5: gated-GELU, untied output layer
    "t5-v1.1": lambda v: T5ForConditionalGeneration(T5Config(vocab_size=v, feed_forward_proj="gated-gelu",
                                                             tie_word_embeddings=False, **TINY, **SPECIAL)),
    "mt5": lambda v: MT5ForConditionalGeneration(MT5Config(vocab_size=v, **TINY, **SPECIAL)),
    "bart": lambda v: BartForConditionalGeneration(BartConfig(
        vocab_size=v, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=1024,
        pad_token_id=0, eos_token_id=1, bos_token_id=1, decoder_start_token_id=1, forced_eos_token_id=1)),
}


def run(cwd, stage, *args):
    result = subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, f"stages.{stage} failed:\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A working folder with params.yaml and tiny prepared splits of the bundled data."""
    work = tmp_path_factory.mktemp("work")
    shutil.copytree(ROOT / "data" / "raw", work / "data" / "raw")
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["splits"] = SPLITS
    p["train"].update(epochs=1, batch_size=16, compile=False)  # compiling is tested in test_pipeline
    p["evaluate"]["max_new_tokens"] = 4
    (work / "params.yaml").write_text(yaml.safe_dump(p))
    run(work, "prepare")
    return work


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_local_checkpoint_trains_and_answers(architecture, prepared, tmp_path):
    checkpoint = tmp_path / architecture
    tokenizer = vocabulary.train_tokenizer(["question: Who founded Kalo? context: Kalo was founded by Ren Ta."], 200)
    ARCHITECTURES[architecture](len(tokenizer)).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)

    work = tmp_path / "work"
    shutil.copytree(prepared, work)
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["model"]["name"] = str(checkpoint)
    (work / "params.yaml").write_text(yaml.safe_dump(p))
    for stage in ("tokenize", "train", "evaluate"):
        run(work, stage)

    config = json.loads((work / "models" / "config.json").read_text())
    assert config["model_type"] == {"t5-v1.1": "t5", "mt5": "mt5", "bart": "bart"}[architecture]
    assert (work / "models" / "model.safetensors").exists()
    metrics = json.loads((work / "metrics" / "eval.json").read_text())
    assert metrics["questions"] == 16 and metrics["missing_predictions"] == 0


@pytest.mark.slow
def test_a_source_budget_beyond_the_models_positions_is_a_param_error(prepared, tmp_path):
    checkpoint = tmp_path / "bart"
    tokenizer = vocabulary.train_tokenizer(["question: Who founded Kalo? context: Kalo was founded by Ren Ta."], 200)
    ARCHITECTURES["bart"](len(tokenizer)).save_pretrained(checkpoint)  # learned positions: 1,024
    tokenizer.save_pretrained(checkpoint)
    work = tmp_path / "work"
    shutil.copytree(prepared, work)
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["model"]["name"] = str(checkpoint)
    p["tokenize"]["max_source_length"] = 2048
    (work / "params.yaml").write_text(yaml.safe_dump(p))
    result = subprocess.run([sys.executable, "-m", "stages.tokenize"], cwd=work, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: tokenize.max_source_length = 2048 is more than model.name = '{checkpoint}' can read "
        "(1024 positions): set it to 1024 or less")
    assert not (work / "data" / "tokenized").exists()


T5_SMALL = dict(d_model=512, d_ff=2048, d_kv=64, num_heads=8, num_layers=6, dropout_rate=0.1)  # the Hub's config


@pytest.mark.parametrize("body", [pytest.param(TINY, id="tiny"), pytest.param(T5_SMALL, id="t5-small",
                                                                              marks=pytest.mark.slow)])
def test_real_squad_with_t5_small_s_tokenizer_answers_with_spans_of_the_context(t5_tokenizer_dir, tmp_path, body):
    """Real SQuAD text (unicode names, long contexts read as windows) through every stage and predict, in
    extractive and in free generation, with t5-small's own tokenizer and embedding (32,128 rows for its
    32,100 ids): on a tiny body, and on t5-small's whole shape (untrained: the Hub is out of reach)."""
    checkpoint = tmp_path / "t5"
    tokenizer = T5Tokenizer.from_pretrained(t5_tokenizer_dir)  # as from_pretrained("t5-small") loads it
    torch.manual_seed(0)  # the same weights whichever tests ran before: an untrained model's answers vary with them
    model = T5ForConditionalGeneration(T5Config(vocab_size=T5_SMALL_VOCAB, feed_forward_proj="relu", **body, **SPECIAL))
    model.generation_config.min_new_tokens = 2  # untrained, it would say </s> at once: make it answer
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    work = tmp_path / "work"
    work.mkdir()
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"].update(source=str(SQUAD_SAMPLE), splits={"train": "train[:160]", "validation": "train[160:200]",
                                                       "test": "validation[:40]"})
    p["model"]["name"] = str(checkpoint)
    p["tokenize"].update(max_source_length=128, stride=32)
    p["train"].update(epochs=1, batch_size=16, eval_questions=8, compile=False)
    p["evaluate"]["max_new_tokens"] = 6
    (work / "params.yaml").write_text(yaml.safe_dump(p))
    for stage in ("prepare", "tokenize", "train", "evaluate"):
        run(work, stage)

    report = by_split(work / "metrics" / "tokenize.json")
    assert report["test"]["windowed"] > 0
    assert 0 < report["test"]["exact_match_ceiling_extractive"] <= 100  # long answers may span two windows
    contexts = {row["id"]: row for row in map(json.loads, (work / "data/prepared/test.jsonl").read_text().splitlines())}
    predictions = [json.loads(line) for line in (work / "data/predictions/test.jsonl").read_text().splitlines()]
    assert len(predictions) == 40
    for row in predictions:
        assert row["prediction"] and row["prediction"] in contexts[row["id"]]["context"]  # verbatim, unicode too
    curve = (work / "dvclive/plots/metrics/eval/f1.tsv").read_text().splitlines()
    assert curve[0] == "step\tf1" and len(curve) == 2
    context = "Chopin played in Łódź and Kraków (1830), then left for Paris."
    answer = run(work, "predict", "--question", "Where did Chopin play?", "--context", context).strip()
    assert answer and answer in context

    p["task"]["variant"] = "generative"  # free generation: the same model writes its answers
    (work / "params.yaml").write_text(yaml.safe_dump(p))
    run(work, "evaluate")
    scores = json.loads((work / "metrics" / "eval.json").read_text())
    free = [json.loads(line)["prediction"] for line in (work / "data/predictions/test.jsonl").read_text().splitlines()]
    assert scores["questions"] == 40 and len(free) == 40 and any(free)
    assert run(work, "predict", "--question", "Where did Chopin play?", "--context", context).strip()

    p["task"]["variant"] = "closed_book"  # the question alone: new inputs, so tokenize and train again
    (work / "params.yaml").write_text(yaml.safe_dump(p))
    for stage in ("tokenize", "train", "evaluate"):
        run(work, stage)
    report = by_split(work / "metrics" / "tokenize.json")
    assert report["test"]["exact_match_ceiling_extractive"] is None and report["test"]["windowed"] == 0
    assert json.loads((work / "metrics" / "eval.json").read_text())["questions"] == 40
    # no context to give; the answer is what plain generate() of the saved model says (barely trained on
    # t5-small's shape, it may say only "▁"): ids past the tokenizer's last suppressed, as predict does
    model = AutoModelForSeq2SeqLM.from_pretrained(work / "models")
    inputs = tokenizer([squad.model_input("Where did Chopin play?", None)], return_tensors="pt")
    ids = model.generate(**inputs, suppress_tokens=list(range(len(tokenizer), T5_SMALL_VOCAB)))[0]
    expected = " ".join(tokenizer.decode(ids, skip_special_tokens=True).split())
    assert run(work, "predict", "--question", "Where did Chopin play?").strip() == expected
