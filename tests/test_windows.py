import torch

from stages import modeling, squad, windows

CONTEXT = " ".join(f"Town {n} was founded in {1700 + n}." for n in range(30)) + " Ada was born in London."
QUESTION = "Where was Ada born?"


def tokenizer():
    return modeling.train_tokenizer([squad.model_input(QUESTION, CONTEXT)] * 20, vocab_size=200)


def test_a_context_that_fits_is_one_window_holding_all_of_it():
    tok = tokenizer()
    [[(ids, first, end)]] = windows.split(tok, [QUESTION], ["Ada was born in London."], 512, 128)
    assert (first, end) == (0, len("Ada was born in London."))
    assert tok.decode(ids, skip_special_tokens=True) == squad.model_input(QUESTION, "Ada was born in London.")


def test_windows_start_and_end_at_whole_words_and_cover_the_context():
    tok = tokenizer()
    [parts] = windows.split(tok, [QUESTION], [CONTEXT], 40, 10)
    assert parts[0][1] == 0 and parts[-1][2] == len(CONTEXT)
    for (_, first, end), (_, next_first, _) in zip(parts, parts[1:]):
        assert next_first < end  # overlap: nothing between two windows is unread
    for ids, first, end in parts:
        assert first == 0 or CONTEXT[first - 1] == " " and CONTEXT[first] != " "
        assert end == len(CONTEXT) or CONTEXT[end] == " "
        assert tok.decode(ids, skip_special_tokens=True) == squad.model_input(QUESTION, CONTEXT[first:end])


def test_the_surest_real_answer_wins_and_no_answer_never_beats_one():
    ids = ["a", "a", "a", "b", "b", "c"]
    answers = ["1700", "London", "", "", "", "Paris"]
    log_probs = {0: -2.0, 1: -3.0, 2: -0.1, 3: -0.5, 4: -0.2}
    assert windows.choose(ids, answers, log_probs) == {
        "a": ("1700", "1700"),  # -2 beats -3; the empty answer's -0.1 does not count
        "b": ("", ""),  # no window found an answer: no answer
        "c": ("Paris", "Paris"),
    }
    assert windows.choose(["a", "a"], ["x", "y"], {0: -5.0, 1: -1.0})["a"] == ("y", "x")  # changed by windowing


def test_answer_log_probs_are_the_model_s_own_sequence_log_probabilities():
    tok = tokenizer()
    torch.manual_seed(0)
    model = modeling.build_model({"name": "scratch", "scratch": {
        "vocab_size": 200, "d_model": 32, "d_ff": 64, "num_layers": 1, "num_heads": 2,
        "feed_forward_proj": "gated-gelu", "dropout": 0.0}}, tok)
    inputs = [tok(squad.model_input(QUESTION, "Ada was born in London."))["input_ids"],
              tok(squad.model_input(QUESTION, CONTEXT[:80]))["input_ids"]]
    scores = modeling.answer_log_probs(model, tok, inputs, ["London", ""], batch_size=1)
    for ids, answer, score in zip(inputs, ["London", ""], scores):
        labels = torch.tensor([tok(text_target=answer)["input_ids"]])
        loss = model(input_ids=torch.tensor([ids]), labels=labels).loss  # mean negative log-likelihood
        assert abs(score + loss.item() * labels.shape[1]) < 1e-3


def test_every_question_is_answered_from_its_windows():
    tok = tokenizer()
    model = modeling.build_model({"name": "scratch", "scratch": {
        "vocab_size": 200, "d_model": 32, "d_ff": 64, "num_layers": 1, "num_heads": 2,
        "feed_forward_proj": "gated-gelu", "dropout": 0.0}}, tok)
    per_question = windows.split(tok, [QUESTION, QUESTION], [CONTEXT, "Ada was born in London."], 40, 10)
    ids = [qid for qid, parts in zip(["long", "short"], per_question) for _ in parts]
    input_ids = [row for parts in per_question for row, _, _ in parts]
    chosen = windows.answer(model, tok, ids, input_ids, batch_size=4, max_new_tokens=4, extractive=True)
    assert set(chosen) == {"long", "short"}
    first_window = modeling.generate(model, tok, [per_question[0][0][0]], 4, 4, extractive=True)[0]
    assert chosen["long"][1] == first_window  # what plain truncation answers
    assert chosen["short"][0] == chosen["short"][1]
