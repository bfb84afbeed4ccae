import subprocess
import sys
from pathlib import Path

import pytest

from stages import vocabulary
from stages.errors import InputError


def test_trained_tokenizer_has_t5_special_ids_and_round_trips():
    texts = ["question: When was Ada born? context: Ada was born in London in 1815."] * 50
    tokenizer = vocabulary.train_tokenizer(texts, vocab_size=100)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("born in 1815")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "born in 1815"


def test_unknown_model_name_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    with pytest.raises(InputError, match="model.name = 'no-such/model' needs the Hugging Face Hub"):
        vocabulary.load_tokenizer("no-such/model")


def test_the_tokenize_stage_does_not_import_the_model_code():
    """Its start-up: the model code imports T5's modules and torch._dynamo through them (stages/vocabulary.py)."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, stages.tokenize; print(sorted(sys.modules))"],
                            cwd=Path(__file__).parent.parent, capture_output=True, text=True, check=True).stdout
    assert "stages.tokenize" in loaded and "stages.modeling" not in loaded and "modeling_t5" not in loaded
