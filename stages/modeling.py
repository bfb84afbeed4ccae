"""Model and tokenizer: load a checkpoint (Hub id or local folder) or build a small T5 from scratch."""

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedTokenizerFast, T5Config,
                          T5ForConditionalGeneration)

from stages import hub
from stages.errors import InputError

SCRATCH = "scratch"
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # T5's ids: pad 0, eos 1, unk 2


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


def build_model(model_params, tokenizer):
    """A new T5 sized by model.scratch, or the checkpoint model.name names."""
    if not is_scratch(model_params):
        return from_pretrained(AutoModelForSeq2SeqLM, model_params["name"], use_safetensors=True,
                               attn_implementation="sdpa")
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
    return T5ForConditionalGeneration(config)


def from_pretrained(cls, name, **kwargs):
    folder = hub.local_path(name, "model.name")
    if folder is None:
        hub.require_hub(name, "model.name", "point model.name at a local checkpoint folder")
    try:
        return cls.from_pretrained(folder or name, **kwargs)
    except (OSError, ValueError) as e:
        raise InputError(f"model.name = {name!r}: cannot load {cls.__name__} ({str(e).splitlines()[0]})") from None


def load_trained(folder):
    """The model and tokenizer the train stage saved in `folder`: on the GPU in bf16 when there is one."""
    if not (folder / "config.json").exists():
        raise InputError(f"{folder}/ holds no trained model: run `dvc repro` (or `dvc pull`) first")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, use_safetensors=True, attn_implementation="sdpa",
                                                  dtype=torch.bfloat16 if bf16_supported() else torch.float32)
    return model.to(device()), tokenizer


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported():
    """bf16 where a GPU computes it natively; T5 must never run in fp16 (its activations overflow)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@torch.inference_mode()
def generate(model, tokenizer, input_ids, batch_size, max_new_tokens):
    """Greedy answers for lists of token ids, in their order; batches of similar length waste no padding."""
    model.eval()
    order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))
    answers = [None] * len(input_ids)
    for start in tqdm(range(0, len(order), batch_size), desc="generating", unit="batch"):
        batch = order[start:start + batch_size]
        inputs = tokenizer.pad({"input_ids": [input_ids[i] for i in batch]}, return_tensors="pt").to(model.device)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
        for i, text in zip(batch, tokenizer.batch_decode(output, skip_special_tokens=True)):
            answers[i] = text.strip()
    return answers
