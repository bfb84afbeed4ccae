import pytest
import torch

from stages import modeling
from stages.errors import InputError

TEXTS = ["question: When was Ada born? context: Ada was born in London in 1815."] * 50


@pytest.fixture(scope="module")
def tokenizer():
    return modeling.train_tokenizer(TEXTS, vocab_size=100)


SCRATCH = {"name": "scratch", "scratch": {"vocab_size": 100, "d_model": 32, "d_ff": 64, "num_layers": 1,
                                          "num_heads": 2, "feed_forward_proj": "gated-gelu",
                                          "dropout": 0.0}}


def test_trained_tokenizer_has_t5_special_ids_and_round_trips(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("born in 1815")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "born in 1815"


def test_scratch_model_is_sized_by_params_and_can_generate(tokenizer):
    model = modeling.build_model(SCRATCH, tokenizer)
    assert model.config.d_model == 32 and model.config.num_decoder_layers == 1
    assert model.config.decoder_start_token_id == 0 and model.config.eos_token_id == 1
    assert model.config.vocab_size == len(tokenizer)


def test_indivisible_heads_are_a_param_error(tokenizer):
    bad = {**SCRATCH, "scratch": {**SCRATCH["scratch"], "num_heads": 3}}
    with pytest.raises(InputError, match=r"model.scratch.d_model \(32\) must be divisible by model.scratch.num_heads"):
        modeling.build_model(bad, tokenizer)


def test_a_saved_checkpoint_folder_loads_through_model_name(tmp_path, tokenizer):
    modeling.build_model(SCRATCH, tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    model = modeling.build_model({"name": str(tmp_path)}, tokenizer)
    assert model.config.d_model == 32
    assert len(modeling.load_tokenizer(str(tmp_path))) == len(tokenizer)


def test_unknown_model_name_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    with pytest.raises(InputError, match="model.name = 'no-such/model' needs the Hugging Face Hub"):
        modeling.load_tokenizer("no-such/model")


def test_generate_keeps_input_order_despite_length_sorting(tokenizer):
    torch.manual_seed(0)
    model = modeling.build_model(SCRATCH, tokenizer)
    inputs = [tokenizer(t)["input_ids"] for t in ["Ada", "question: When was Ada born? context: London", "born"]]
    batched = modeling.generate(model, tokenizer, inputs, batch_size=2, max_new_tokens=4)
    one_by_one = [modeling.generate(model, tokenizer, [ids], batch_size=1, max_new_tokens=4)[0] for ids in inputs]
    assert batched == one_by_one
