"""The model: a checkpoint (Hub id or local folder) or a small T5 built from scratch, tuned for speed."""

import functools
import types

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, T5Config, T5ForConditionalGeneration
from transformers.integrations import sdpa_attention
from transformers.models.t5.modeling_t5 import T5DenseActDense, T5DenseGatedActDense

from stages import hub, params, squad
from stages.errors import InputError


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
    forward number is the same; the bias's gradient sums its layers' parts in another order (docs/guide.md,
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
    """The model as every stage runs it: with the three speed-ups above (the first two for the process),
    and telling the Trainer that its loss is its batch's mean whatever token count it is passed: else, as
    its forward takes **kwargs, the Trainer would sum, not average, gradient-accumulation steps and
    multiply the loss by the process count (tests/test_train.py)."""
    avoid_cudnn_attention()
    merge_position_bias_once()
    model.accepts_loss_kwargs = False
    return skip_fp32_round_trip(model)


def build_model(model_params, tokenizer):
    """A new T5 sized by model.scratch, or the checkpoint model.name names, to train."""
    if params.is_scratch(model_params):
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
        model = T5ForConditionalGeneration(config)
    else:
        model = hub.from_pretrained(AutoModelForSeq2SeqLM, model_params["name"], use_safetensors=True,
                                    attn_implementation="sdpa")
    return tuned(model)


def load_trained(folder):
    """The model and tokenizer the train stage saved in `folder`: on the GPU in bf16 when there is one."""
    if not (folder / "config.json").exists():
        raise InputError(f"{folder}/ holds no trained model: {how_to_get(folder)}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        model = AutoModelForSeq2SeqLM.from_pretrained(folder, use_safetensors=True, trust_remote_code=False,
                                                      attn_implementation="sdpa",
                                                      dtype=torch.bfloat16 if bf16_supported() else torch.float32)
    except (OSError, ValueError, KeyError) as e:  # transformers' ways of saying "not a checkpoint of mine"
        raise InputError(f"{folder}/ is not a seq2seq model folder ({str(e).splitlines()[0][:200]}); point at "
                         "one the train stage wrote (models/, or one `dvc artifacts get` fetched)") from None
    return tuned(model).to(device()), tokenizer


def how_to_get(folder):
    """What to run for the model dvc.lock names: `dvc pull` where this cache or the remote holds it, else
    `dvc repro` (the time measured for the default pipeline)."""
    name = str(folder).rstrip("/")
    try:
        from dvc.repo import Repo
        with Repo() as repo:
            outs = [changed.get("changed outs", {}) for entries in repo.status(targets=[name]).values()
                    for changed in entries if isinstance(changed, dict)]
            cached = any(out.get(name) == "deleted" for out in outs)  # missing here, in the cache ("not in cache")
            remote = any(state == "deleted" for path, state in repo.status(targets=[name], cloud=True).items()
                         if path == name or path.startswith(f"{name}/"))  # on the remote, not here
    except Exception:  # noqa: BLE001 -- no DVC project here, or no remote reachable: training is the way
        cached = remote = False
    if cached or remote:
        return f"run `dvc pull {name}` ({'the cache' if cached else 'the remote'} holds it)"
    return ("run `dvc repro` to train it (the default pipeline: 10 to 26 min on a 2-core CPU; `make quick`: a "
            "quarter of it), or `dvc pull` once a teammate's `dvc push` has put it on the remote")


QA = "question-answering"  # the config's task_specific_params entry: how the model reads and answers
READING = {"context": True, "max_source_length": 512, "stride": 128, "max_new_tokens": 32}  # checkpoints without it


def keep_reading(model, tokenize_params, context=True):
    """Write into the model's config how it reads questions (input, with the context or, closed book, without;
    source budget, windows' overlap) and how long its answers are: whoever loads the folder answers as the
    pipeline does, without its params.yaml."""
    settings = {"input": squad.model_input("{question}", "{context}" if context else None), "context": context,
                "max_source_length": tokenize_params["max_source_length"], "stride": tokenize_params["stride"],
                "max_new_tokens": tokenize_params["max_target_length"]}
    kept = getattr(model.config, "task_specific_params", None) or {}  # t5-small's: summarization, translation
    model.config.task_specific_params = {**kept, QA: settings}
    model.generation_config.max_new_tokens = settings["max_new_tokens"]  # plain generate() answers as long


def reading(model):
    """How `model` reads and answers: what keep_reading wrote, else READING."""
    return {**READING, **(getattr(model.config, "task_specific_params", None) or {}).get(QA, {})}


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported():
    """bf16 where a GPU computes it natively; T5 must never run in fp16 (its activations overflow)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
