import copy

import pytest
import torch
from transformers import T5ForConditionalGeneration
from transformers.integrations import sdpa_attention
from transformers.models.t5.modeling_t5 import T5DenseActDense, T5DenseGatedActDense

from stages import modeling, vocabulary
from stages.errors import InputError
from tests.conftest import training_losses

TEXTS = ["question: When was Ada born? context: Ada was born in London in 1815."] * 50


@pytest.fixture(scope="module")
def tokenizer():
    return vocabulary.train_tokenizer(TEXTS, vocab_size=100)


SCRATCH = {"name": "scratch", "scratch": {"vocab_size": 100, "d_model": 32, "d_ff": 64, "num_layers": 1,
                                          "num_heads": 2, "feed_forward_proj": "gated-gelu",
                                          "dropout": 0.0}}


def test_scratch_model_is_sized_by_params_and_can_generate(tokenizer):
    model = modeling.build_model(SCRATCH, tokenizer)
    assert model.config.d_model == 32 and model.config.num_decoder_layers == 1
    assert model.config.decoder_start_token_id == 0 and model.config.eos_token_id == 1
    assert model.config.vocab_size == len(tokenizer)


def untouched_copy(model):
    """The same weights in a T5 as transformers builds it."""
    plain = T5ForConditionalGeneration(model.config)
    plain.load_state_dict(model.state_dict())
    return plain


@pytest.mark.parametrize("activation", ["relu", "gated-gelu"])  # t5-small's and T5 v1.1's feed-forward layers
def test_feed_forward_skips_the_fp32_round_trip_under_autocast_and_trains_bit_for_bit_alike(tokenizer, activation):
    model = modeling.build_model({**SCRATCH, "scratch": {**SCRATCH["scratch"], "feed_forward_proj": activation}},
                                 tokenizer)
    plain = untouched_copy(model)
    seen = {model: set(), plain: set()}  # the dtypes reaching each model's `wo`
    for net in seen:
        for layer in net.modules():
            if isinstance(layer, (T5DenseActDense, T5DenseGatedActDense)):
                layer.wo.register_forward_pre_hook(lambda module, args, net=net: seen[net].add(args[0].dtype))
    # equal, not close: the casts it skips change no bit
    assert training_losses(model, autocast=True) == training_losses(plain, autocast=True)
    assert seen == {model: {torch.bfloat16}, plain: {torch.float32}}
    seen[model].clear()
    training_losses(model)  # without autocast the layers run as transformers wrote them
    assert seen[model] == {torch.float32}
    twin = copy.deepcopy(model)  # a copy computes with its own weights
    assert all(layer.forward.__self__ is layer for layer in twin.modules() if "forward" in layer.__dict__)


TWO_LAYERS = {**SCRATCH, "scratch": {**SCRATCH["scratch"], "num_layers": 2}}  # a position bias handed on


def transformers_merge():
    """transformers' own create_position_bias_mask, whether or not merge_position_bias_once has run."""
    merge = sdpa_attention.create_position_bias_mask
    return getattr(merge, "__wrapped__", merge)


def test_position_bias_and_mask_are_merged_once_per_stack_with_the_same_losses(tokenizer, monkeypatch):
    merge = transformers_merge()
    merges = []
    model = modeling.build_model(TWO_LAYERS, tokenizer)
    plain = untouched_copy(model)
    monkeypatch.setattr(sdpa_attention, "create_position_bias_mask",  # counted, and restored after the test
                        lambda *args: merges.append(args[0].shape) or merge(*args))
    expected = training_losses(plain)
    assert len(merges) == 4 * 3 * 2  # per step: encoder, decoder self-attention, cross-attention; 2 layers each
    merges.clear()
    modeling.merge_position_bias_once()
    assert training_losses(model) == pytest.approx(expected, rel=1e-6)  # gradients summed in another order
    assert len(merges) == 4 * 3


@pytest.mark.parametrize("beams", [1, 3])
def test_merged_position_bias_generates_the_same_answers(tokenizer, monkeypatch, beams):
    merge = transformers_merge()
    model = modeling.build_model(TWO_LAYERS, tokenizer).eval()
    inputs = tokenizer(TEXTS[:1] + ["question: Who? context: Ada."], padding=True, return_tensors="pt")

    def answers():
        out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, num_beams=beams, do_sample=False,
                             return_dict_in_generate=True, output_scores=True)
        return out.sequences, torch.stack(out.scores)
    monkeypatch.setattr(sdpa_attention, "create_position_bias_mask", merge)  # transformers' own, restored after
    sequences, scores = answers()
    modeling.merge_position_bias_once()
    merged_sequences, merged_scores = answers()
    assert torch.equal(merged_sequences, sequences) and torch.equal(merged_scores, scores)  # KV cache, padding


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
    assert len(vocabulary.load_tokenizer(str(tmp_path))) == len(tokenizer)


def test_a_checkpoint_with_pickled_weights_only_is_refused(tmp_path, tokenizer):
    """Loading a pickle can run code: model.name folders must hold safetensors."""
    model = modeling.build_model(SCRATCH, tokenizer)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(InputError, match=f"model.name = '{tmp_path}': cannot load .*no file named model.safetensors"):
        modeling.build_model({"name": str(tmp_path)}, tokenizer)


def test_a_checkpoint_asking_to_run_its_own_code_is_refused_without_running_it(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt="": "y")  # a user at a terminal who says yes
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                      "from transformers import PreTrainedModel as Model, PretrainedConfig as Config\n")
    (tmp_path / "config.json").write_text(
        '{"model_type": "evil", "auto_map": {"AutoConfig": "evil.Config", "AutoModelForSeq2SeqLM": "evil.Model"}}')
    with pytest.raises(InputError, match="model.name = .*: cannot load"):
        modeling.build_model({"name": str(tmp_path)}, tokenizer)
    assert not marker.exists()
