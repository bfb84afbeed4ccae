"""The tokenizer a model reads with: its checkpoint's, or one trained here for a model built from scratch.

Apart from modeling.py so that the tokenize stage does not import the model code (`import stages.tokenize`
took 4.1 s with it, 2.7 to 3.2 s without, on the 2-core development machine).
"""

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from stages import hub

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # T5's ids: pad 0, eos 1, unk 2


def train_tokenizer(texts, vocab_size):
    """A SentencePiece-style BPE tokenizer (words marked with ▁, punctuation split off), T5's special ids.

    BPE, not Unigram: on this project's templated data the Unigram trainer split the most frequent
    words into letters ("▁w as"), doubling input lengths (docs/guide.md, "Tokenizer"). Saved as a generic
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
    """model.name's tokenizer: a Hub id's or a local checkpoint folder's."""
    return hub.from_pretrained(AutoTokenizer, name)
