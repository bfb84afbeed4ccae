import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast, T5Config, \
    T5ForConditionalGeneration

from stages import decoding, spans, windows
from tests.conftest import CONTEXT, QUESTION, SQUAD_SAMPLE, T5_SMALL_VOCAB, window

SPECIAL = [0, 1, 2]  # pad (T5's decoder start), </s>, <unk>


def allowed_after(source, prefix, decoder_start=(0,)):
    """Token ids CopySpan leaves allowed after `prefix`, for one row of context tokens (-1: padding)."""
    span = decoding.CopySpan(torch.tensor([source]), eos_token_id=1, prompt_length=len(decoder_start))
    scores = span(torch.tensor([[*decoder_start, *prefix]]), torch.zeros(1, 12))
    return {int(i) for i in torch.nonzero(scores[0] > float("-inf"))}


def test_copy_span_allows_only_tokens_that_continue_a_span_of_the_context():
    source = [5, 6, 7, 5, 8, 2, 9, -1, -1]  # context tokens, <unk> among them, then padding
    assert allowed_after(source, []) == {5, 6, 7, 8, 2, 9, 1}
    assert allowed_after(source, [5]) == {6, 8, 1}
    assert allowed_after(source, [5, 6]) == {7, 1}
    assert allowed_after(source, [8]) == {2, 1}  # <unk> stands for characters copying gets back
    assert allowed_after(source, [6, 5]) == {1}  # not a span: only </s>
    assert allowed_after(source, [9]) == {1}  # no token follows 9: the span can only end
    assert allowed_after(source, [5], decoder_start=(2, 0)) == {6, 8, 1}  # BART: </s> then the forced <s>


def test_the_decoder_start_tokens_are_left_alone():
    scores = decoding.CopySpan(torch.tensor([[5, 6]]), 1, prompt_length=2)(torch.tensor([[2]]), torch.zeros(1, 12))
    assert torch.isfinite(scores).all()  # BART's forced <s> comes from its own processor


def tiny_t5(tokenizer):
    """t5-small's 32,128-row embedding, tied as t5-small's, on a tiny body."""
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(
        vocab_size=T5_SMALL_VOCAB, d_model=32, d_ff=64, d_kv=16, num_heads=2, num_layers=1, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def force(model, preferences):
    """Make the model prefer, at answer token k, preferences[k] (a list of token ids, best first), then </s>:
    a model that has learned exactly these answers, for the end-to-end checks below."""
    step = [0]

    def hook(module, args, kwargs, output):  # with the KV cache each call gets the newest token alone
        if "decoder_input_ids" not in kwargs:  # a forward with labels, not generation
            return output
        step[0] = 0 if kwargs["decoder_input_ids"].tolist() == [[0]] * len(output.logits) else step[0] + 1
        k = step[0]
        logits = torch.full_like(output.logits[:, -1], -100.0)
        for rank, token in enumerate(preferences[k] if k < len(preferences) else [1]):
            logits[:, token] = 100.0 - rank
        output.logits[:, -1] = logits
        return output
    model.register_forward_hook(hook, with_kwargs=True)
    return model


def gold_tokens(tokenizer, w, context, answer, at=None):
    source = spans.context_tokens(w.input_ids, w.offsets)
    first, count = spans.answer_span(source, context, context.index(answer) if at is None else at, answer)
    return source[0][first:first + count].tolist()


def test_a_model_that_picks_the_span_gets_the_context_s_characters(t5_tokenizer):
    w = window(t5_tokenizer)
    tokens = gold_tokens(t5_tokenizer, w, CONTEXT, "Łódź")
    model = force(tiny_t5(t5_tokenizer), [[token] for token in tokens])
    extractive, _ = decoding.generate(model, t5_tokenizer, [(w.input_ids, w.offsets)], [CONTEXT], 1, 8, True)
    free, _ = decoding.generate(model, t5_tokenizer, [(w.input_ids, w.offsets)], [CONTEXT], 1, 8, False)
    assert extractive == ["Łódź"]
    assert free == [t5_tokenizer.decode(tokens, skip_special_tokens=True)] != ["Łódź"]


def attend(model, positions):
    """Make every decoder layer's cross-attention, when it is computed (eager attention), weigh only these
    input positions: a model that reads its answer there."""
    def hook(module, args, output):
        if output[2] is not None:
            output[2].zero_()[..., positions] = 1 / len(positions)
    for block in model.decoder.block:
        block.layer[1].register_forward_hook(hook)
    return model


@pytest.mark.parametrize("asked", [0, 1])
def test_an_answer_whose_tokens_stand_twice_is_the_place_the_decoder_read(t5_tokenizer, asked):
    """"東京" and "大阪" are both "▁ <unk>" to t5-small: the answer is the name whose tokens the decoder's
    cross-attention weighed while it wrote them, not the first look-alike."""
    context = "Ala went to 東京 and Ola went to 大阪 by train."
    names = ["東京", "大阪"]
    w = window(t5_tokenizer, context, "Where did Ola go?")
    tokens = gold_tokens(t5_tokenizer, w, context, names[asked])
    inputs = [i for i, (a, _) in enumerate(w.offsets) if a == context.index(names[asked])]
    model = attend(force(tiny_t5(t5_tokenizer), [[token] for token in tokens]), inputs)
    [answer], [ids] = decoding.generate(model, t5_tokenizer, [(w.input_ids, w.offsets)], [context], 1, 8, True)
    assert ids == tokens and answer == names[asked]
    assert model.config._attn_implementation == "sdpa"  # eager only to read the weights


def test_free_generation_never_writes_ids_past_the_tokenizer_s_last(t5_tokenizer):
    """t5-small's embedding has 28 rows more than its tokenizer has ids; an untrained model may prefer them."""
    w = window(t5_tokenizer)
    london = t5_tokenizer("London", add_special_tokens=False)["input_ids"]
    model = force(tiny_t5(t5_tokenizer), [[T5_SMALL_VOCAB - 1, london[0]]] + [[token] for token in london[1:]])
    [text], [ids] = decoding.generate(model, t5_tokenizer, [(w.input_ids, w.offsets)], [CONTEXT], 1, 8, False)
    assert ids == london and text == "London"


def test_no_answer_comes_from_the_question_or_the_prompt_words(t5_tokenizer):
    question = "Who was the composer of Warsaw?"
    w = window(t5_tokenizer, question=question)
    only_in_prompt = [t for t in t5_tokenizer("question: composer context:", add_special_tokens=False)["input_ids"]
                      if t not in spans.context_tokens(w.input_ids, w.offsets)[0]]
    assert only_in_prompt
    warsaw = t5_tokenizer("Warsaw", add_special_tokens=False)["input_ids"]
    # the model would rather say a prompt or question word; the copy constraint leaves it "Warsaw"
    model = force(tiny_t5(t5_tokenizer), [[only_in_prompt[0], warsaw[0]]] + [[t] for t in warsaw[1:]])
    [answer], _ = decoding.generate(model, t5_tokenizer, [(w.input_ids, w.offsets)], [CONTEXT], 1, 8, True)
    assert answer == "Warsaw"


def test_generate_keeps_input_order_despite_length_sorting(t5_tokenizer):
    model = tiny_t5(t5_tokenizer)
    model.generation_config.min_new_tokens = 2
    rows = [window(t5_tokenizer, context) for context in ["Ada", CONTEXT, "Ada was born in London in 1815."]]
    inputs, contexts = [(w.input_ids, w.offsets) for w in rows], ["Ada", CONTEXT, "Ada was born in London in 1815."]
    for extractive in (False, True):
        texts, ids = decoding.generate(model, t5_tokenizer, inputs, contexts, 2, 4, extractive)
        singles = [decoding.generate(model, t5_tokenizer, [x], [c], 1, 4, extractive) for x, c in zip(inputs, contexts)]
        assert texts == [text for [text], _ in singles] and ids == [answer for _, [answer] in singles]
        if extractive:
            assert all(text in context for text, context in zip(texts, contexts))


def test_the_surest_real_answer_wins_and_no_answer_never_beats_one():
    ids = ["a", "a", "a", "b", "b", "c"]
    answers = ["1700", "London", "", "", "", "Paris"]
    log_probs = {0: -2.0, 1: -3.0, 2: -0.1, 3: -0.5, 4: -0.2}
    assert decoding.choose(ids, answers, log_probs) == {
        "a": ("1700", "1700"),  # -2 beats -3; the empty answer's -0.1 does not count
        "b": ("", ""),  # no window found an answer: no answer
        "c": ("Paris", "Paris"),
    }
    assert decoding.choose(["a", "a"], ["x", "y"], {0: -5.0, 1: -1.0})["a"] == ("y", "x")  # changed by windowing


def test_answer_log_probs_are_the_model_s_own_sequence_log_probabilities(t5_tokenizer):
    model = tiny_t5(t5_tokenizer)
    inputs = [window(t5_tokenizer).input_ids, window(t5_tokenizer, "Ada was born in London.").input_ids]
    answers = [t5_tokenizer("London", add_special_tokens=False)["input_ids"], []]
    scores = decoding.answer_log_probs(model, t5_tokenizer, inputs, answers, batch_size=1)
    for ids, answer, score in zip(inputs, answers, scores):
        labels = torch.tensor([answer + [t5_tokenizer.eos_token_id]])
        loss = model(input_ids=torch.tensor([ids]), labels=labels).loss  # mean negative log-likelihood
        assert abs(score + loss.item() * labels.shape[1]) < 1e-3


def test_every_question_is_answered_from_its_windows(t5_tokenizer):
    model = tiny_t5(t5_tokenizer)
    model.generation_config.min_new_tokens = 2
    long_context = json.loads((SQUAD_SAMPLE / "train.json").read_text())["data"][1]["paragraphs"][0]["context"]
    questions, contexts = ["What is it?", QUESTION], [long_context, CONTEXT]
    answers = decoding.answer_questions(model, t5_tokenizer, questions, contexts,
                                        {"max_source_length": 64, "stride": 16},
                                        {"batch_size": 4, "max_new_tokens": 4, "extractive": True})
    assert len(windows.split(t5_tokenizer, questions[:1], contexts[:1], 64, 16)[0]) > 1
    assert len(answers) == 2 and all(answer and answer in context for answer, context in zip(answers, contexts))


def bart_tokenizer(text):
    """A byte-level BPE tokenizer with BART's special tokens and template: <s> text </s>."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([text] * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                             special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")


@pytest.mark.parametrize("forced_bos", [0, None])
def test_bart_answers_as_it_was_trained_to_start_whatever_it_forces(forced_bos):
    """BART's targets start with <s>: decoding starts </s> <s> (its decoder start, then the targets' first
    token), whether or not the checkpoint forces <s> (forced_bos_token_id); forbidding <s> at the first step
    would leave a model trained on such targets lost."""
    question, context = "When was Ada born?", "Ada was born in London in 1815."
    tokenizer = bart_tokenizer(f"question: {question} context: {context}")
    assert spans.target_specials(tokenizer) == ([0], [2])
    torch.manual_seed(0)
    model = BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, bos_token_id=0, pad_token_id=1,
        eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=forced_bos, forced_eos_token_id=2))
    batch = tokenizer([f"question: {question} context: {context}"], return_tensors="pt")
    labels = tokenizer(text_target=[" London in 1815"], return_tensors="pt")["input_ids"]  # <s> ... </s>
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    fed = []  # what the decoder reads, step by step: its start, then each token written
    model.register_forward_pre_hook(lambda module, args, kwargs: fed.extend(kwargs["decoder_input_ids"][0].tolist())
                                    if "decoder_input_ids" in kwargs else None, with_kwargs=True)
    for extractive in (True, False):
        fed.clear()
        [answer] = decoding.answer_questions(model, tokenizer, [question], [context],
                                             {"max_source_length": 512, "stride": 128},
                                             {"batch_size": 1, "max_new_tokens": 6, "extractive": extractive})
        assert answer == "London in 1815"
        assert fed[:len(labels[0])] == [model.config.decoder_start_token_id] + labels[0, :-1].tolist()  # as trained
