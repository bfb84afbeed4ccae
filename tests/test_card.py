import yaml
from huggingface_hub import ModelCard

from stages import card, modeling, params, vocabulary

REPORT = [{"split": split, "questions": n, "examples": n + 5, "exact_match_ceiling_extractive": 99.5,
           "exact_match_ceiling_generation": 97.25} for split, n in (("train", 400), ("validation", 80), ("test", 60))]
LOG = [{"loss": 3.2, "step": 10}, {"eval_loss": 2.0, "eval_exact_match": 40.0, "eval_f1": 45.5, "epoch": 1.0},
       {"eval_loss": 1.5, "eval_exact_match": 55.0, "eval_f1": 58.25, "epoch": 2.0},
       {"eval_loss": 1.4, "eval_exact_match": 52.5, "eval_f1": 56.0, "epoch": 3.0}]


def model_and_params(name="scratch"):
    p = params.load()
    p["model"]["name"] = name
    p["model"]["scratch"].update(d_model=32, d_ff=64, num_layers=1, num_heads=2)
    tokenizer = vocabulary.train_tokenizer(["question: Who? context: Ada was born in 1815."] * 5, 100)
    model = modeling.build_model({**p["model"], "name": "scratch"}, tokenizer)
    modeling.keep_reading(model, p["tokenize"])
    return model, p


def test_the_card_s_front_matter_is_hugging_face_s_and_holds_the_validation_results(tmp_path, monkeypatch):
    monkeypatch.chdir(card.__file__.rsplit("/stages/", 1)[0])  # params.yaml
    model, p = model_and_params()
    card.write(tmp_path / "README.md", p, model, REPORT, LOG)
    parsed = ModelCard.load(tmp_path / "README.md")
    assert parsed.data.library_name == "transformers" and parsed.data.pipeline_tag == "text2text-generation"
    assert parsed.data.datasets == ["data/raw"] and parsed.data.base_model is None  # built from scratch
    results = {r.metric_type: (r.metric_value, r.dataset_split) for r in parsed.data.eval_results}
    assert results == {"exact_match": (55.0, "train[20000:22000]"), "f1": (58.25, "train[20000:22000]")}
    front = yaml.safe_load((tmp_path / "README.md").read_text().split("---")[1])
    assert front["model-index"][0]["name"] == card.ARTIFACT
    text = parsed.text
    assert "Best epoch 2: exact match 55.00, F1 58.25; last epoch 3: exact match 52.50, F1 56.00." in text
    assert "| test | 99.5 | 97.25 |" in text and "| `train.lr` | `0.0007` |" in text
    assert "| train | `train[:20000]` | 400 | 405 |" in text
    assert "invented people" in text and "python -m stages.predict --model" in text
    assert "AutoModelForSeq2SeqLM.from_pretrained" in text and "metrics/eval.json" in text


def test_a_fine_tuned_model_s_card_names_its_base_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(card.__file__.rsplit("/stages/", 1)[0])
    model, p = model_and_params("t5-small")
    card.write(tmp_path / "README.md", p, model, REPORT, LOG[:1])  # no validation questions answered
    parsed = ModelCard.load(tmp_path / "README.md")
    assert parsed.data.base_model == "t5-small" and not parsed.data.eval_results
    assert "fine-tuned from `t5-small`" in parsed.text and "eval loss only" in parsed.text
