import json
import shutil
from pathlib import Path

import datasets
import pytest
import yaml

from stages import spans, squad, tokenize, vocabulary
from stages.errors import InputError
from stages.tokenize import encode, fingerprint, one_row_per_answer, training_windows
from tests.conftest import T5_SMALL_TOKENIZER, by_split

ROOT = Path(__file__).resolve().parent.parent

CONTEXT = "Ada Lovelace was born in London in 1815. She wrote the first program."


@pytest.fixture(scope="module")
def tokenizer():
    return vocabulary.train_tokenizer([squad.model_input("Where was Ada born?", CONTEXT)] * 20, vocab_size=200)


def batch(answer):
    return {"id": ["q1"], "question": ["Where was Ada born?"], "context": [CONTEXT],
            "answers": [{"text": [answer, "x"], "answer_start": [CONTEXT.find(answer), 0]}]}


def test_input_is_question_then_context_and_target_is_the_first_answer(tokenizer):
    out = encode(batch("London"), tokenizer, max_source_length=512, max_target_length=32, stride=8)
    assert tokenizer.decode(out["input_ids"][0], skip_special_tokens=True) == squad.model_input(
        "Where was Ada born?", CONTEXT)
    assert tokenizer.decode(out["labels"][0], skip_special_tokens=True) == "London"
    assert out["input_ids"][0][-1] == tokenizer.eos_token_id
    assert (out["window"], out["holds_answer"], out["windowed"]) == ([0], [True], [False])
    assert (out["answer_in_no_window"], out["target_truncated"]) == ([False], [False])


LONG_CONTEXT = " ".join(f"Town {n} was founded in {1700 + n}." for n in range(30)) + " Ada was born in London."


def long_batch(answer):
    return {"id": ["q1"], "question": ["Where was Ada born?"], "context": [LONG_CONTEXT],
            "answers": [{"text": [answer], "answer_start": [LONG_CONTEXT.rfind(answer)]}]}


def test_a_long_context_becomes_overlapping_windows_and_only_the_answer_s_window_holds_it():
    tok = vocabulary.train_tokenizer([squad.model_input("Where was Ada born?", LONG_CONTEXT)] * 20, vocab_size=200)
    whole = len(tok(squad.model_input("Where was Ada born?", LONG_CONTEXT))["input_ids"])
    out = encode(long_batch("London"), tok, max_source_length=48, max_target_length=8, stride=12)
    texts = [tok.decode(ids, skip_special_tokens=True) for ids in out["input_ids"]]
    assert whole > 48 and len(texts) > 2 and out["window"] == list(range(len(texts)))
    assert all(len(ids) <= 48 for ids in out["input_ids"])
    assert all(text.startswith("question: Where was Ada born? context: ") for text in texts)
    pieces = [text.split(" context: ", 1)[1] for text in texts]
    assert all(piece in LONG_CONTEXT for piece in pieces)
    assert all(LONG_CONTEXT.find(b) < LONG_CONTEXT.find(a) + len(a) for a, b in zip(pieces, pieces[1:]))  # overlap
    assert LONG_CONTEXT.endswith(pieces[-1])  # the end of the context is read
    assert out["holds_answer"] == ["London" in piece for piece in pieces]
    assert out["holds_answer"][-1] and not out["holds_answer"][0]  # the answer sits near the end
    assert out["windowed"] == [True] + [False] * (len(texts) - 1)  # counted once per question
    assert out["answer_in_no_window"] == [False] * len(texts)
    assert all(tok.decode(labels, skip_special_tokens=True) == "London" for labels in out["labels"])


def test_a_stride_that_leaves_no_room_to_advance_names_the_param():
    tok = vocabulary.train_tokenizer([squad.model_input("Where was Ada born?", LONG_CONTEXT)] * 20, vocab_size=200)
    with pytest.raises(InputError, match="tokenize.stride = 30"):
        encode(long_batch("London"), tok, max_source_length=40, max_target_length=8, stride=30)


def test_training_keeps_the_windows_that_hold_the_answer_and_optionally_others_as_no_answer():
    rows = datasets.Dataset.from_dict({"holds_answer": [True, False, False, True], "labels": [[5, 1]] * 4})
    assert training_windows(rows, 0.0, [1], seed=0)["labels"] == [[5, 1], [5, 1]]
    everything = training_windows(rows, 1.0, [1], seed=0)
    assert everything["labels"] == [[5, 1], [1], [1], [5, 1]]  # answer-less windows learn "no answer"


def test_an_unanswerable_question_is_trained_to_say_nothing_in_every_window(tokenizer):
    rows = {"id": ["q1"], "question": ["Who?"], "context": [CONTEXT], "answers": [{"text": [], "answer_start": []}]}
    out = encode(rows, tokenizer, 512, 32, stride=8)
    assert out["labels"] == [[tokenizer.eos_token_id]] and out["holds_answer"] == [True]
    assert out["copyable"] == out["spellable"] == [True] and out["golds_not_spelled"] == out["golds_not_copyable"] == [0]


def test_a_long_target_is_cut_and_counted(tokenizer):
    out = encode(batch("first program"), tokenizer, 512, max_target_length=2, stride=8)
    assert out["target_truncated"] == [True]
    assert len(out["labels"][0]) == 2


def test_answers_the_tokenizer_cannot_spell_are_counted():
    context = "Ada wrote {x} in Zürich in 1843."
    tok = vocabulary.train_tokenizer([squad.model_input("What did Ada write?", "Ada wrote x in Zurich in 1843.")] * 20,
                                     vocab_size=200)  # never saw "{", "}" or "ü"
    rows = {"id": ["q1", "q2", "q3"], "question": ["What?", "Where?", "When?"], "context": [context] * 3,
            "answers": [{"text": ["{x}", "x"], "answer_start": [10, 11]},  # a gold without braces survives
                        {"text": ["Zürich"], "answer_start": [17]},
                        {"text": ["1843"], "answer_start": [27]}]}
    out = encode(rows, tok, 512, 32, stride=8)
    assert out["golds_not_spelled"] == [0, 1, 0]  # normalised "{x}" is "x": still an exact match
    assert out["spellable"] == [True, False, True]
    assert out["golds_not_copyable"] == [0, 0, 0] and out["copyable"] == [True] * 3  # copying keeps "ü"


def test_the_target_is_the_answer_as_the_context_s_tokens_write_it(t5_tokenizer):
    context = "Chopin left Warsaw (1830) for Paris and Łódź."
    rows = {"id": ["q1", "q2", "q3"], "question": ["When?", "Where?", "What?"], "context": [context] * 3,
            "answers": [{"text": [answer], "answer_start": [context.index(answer)]}
                        for answer in ("1830", "Łódź", "ars")]}  # "ars": a piece of a word
    out = encode(rows, t5_tokenizer, 512, 32, stride=8)
    alone = t5_tokenizer(text_target=["1830", "Łódź", "ars"])["input_ids"]
    for labels, ids, offsets, answer in zip(out["labels"], out["input_ids"], out["offsets"], ["1830", "Łódź"]):
        source = spans.context_tokens(ids, offsets)
        first, count = spans.answer_span(source, context, context.index(answer), answer)
        assert labels == source[0][first:first + count].tolist() + [t5_tokenizer.eos_token_id]
        assert spans.span_text(source, context, first, count) == answer
    assert out["labels"][0] != alone[0]  # "(18" "30" in the context, "18" "30" alone
    assert out["labels"][2] == alone[2]  # nothing covers it: the answer tokenized alone
    assert out["copyable"] == [True, True, False] and out["golds_not_copyable"] == [0, 0, 1]
    assert out["spellable"] == [True, False, True] and out["golds_not_spelled"] == [0, 1, 0]  # <unk> loses "Ł", "ź"


def test_all_answers_gives_one_row_per_distinct_answer():
    rows = {"id": ["q1", "q2"], "question": ["A?", "B?"], "context": ["ctx a", "ctx b"],
            "answers": [{"text": ["x", "x", "y"], "answer_start": [0, 0, 4]}, {"text": ["z"], "answer_start": [2]}]}
    out = one_row_per_answer(rows)
    assert out["id"] == ["q1", "q1", "q2"] and out["question"] == ["A?", "A?", "B?"]
    assert out["answers"] == [{"text": ["x"], "answer_start": [0]}, {"text": ["y"], "answer_start": [4]},
                              {"text": ["z"], "answer_start": [2]}]
    unanswerable = {"id": ["q3"], "question": ["C?"], "context": ["ctx"], "answers": [{"text": [], "answer_start": []}]}
    assert one_row_per_answer(unanswerable) == unanswerable  # kept once, without an answer


def test_the_fingerprint_names_the_content(tmp_path, tokenizer):
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": "q1"}\n')
    settings = {"max_source_length": 512, "max_target_length": 32, "train_answers": "first"}
    assert fingerprint(path, tokenizer, settings) == fingerprint(path, tokenizer, dict(settings))
    assert fingerprint(path, tokenizer, settings) != fingerprint(path, tokenizer, {**settings, "train_answers": "all"})
    before = fingerprint(path, tokenizer, settings)
    path.write_text('{"id": "q2"}\n')
    assert fingerprint(path, tokenizer, settings) != before


def tokenized_bytes(folder):
    """Every file tokenize writes, by path under data/tokenized/ and metrics/."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_split_is_mapped_in_several_processes_only_where_each_gets_1000_rows(monkeypatch):
    monkeypatch.setattr(tokenize, "PROCESSES", 1)
    assert tokenize.worker_processes(30_000) is None  # this process: num_proc=1 would start a pool of one
    monkeypatch.setattr(tokenize, "PROCESSES", 8)
    assert tokenize.worker_processes(8_000) == 8
    assert tokenize.worker_processes(7_999) is None


def test_several_processes_write_the_same_bytes_as_one(tmp_path, monkeypatch):
    (tmp_path / "data/prepared").mkdir(parents=True)
    for split, spec in (("train", "train[:2000]"), ("validation", "train[2000:2050]"), ("test", "validation[:50]")):
        rows, _, _ = squad.load_split(ROOT / "data/raw", spec)  # the bundled data, as prepare writes it
        rows = rows.remove_columns("problem")
        rows.to_json(tmp_path / "data/prepared" / f"{split}.jsonl", lines=True, force_ascii=False)
    (tmp_path / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    monkeypatch.chdir(tmp_path)
    written = []
    for processes in (1, 2):  # train's 2,000 rows in two processes; the small splits in one
        monkeypatch.setattr(tokenize, "PROCESSES", processes)
        tokenize.main()
        written.append(tokenized_bytes(tmp_path / "data/tokenized") | tokenized_bytes(tmp_path / "metrics"))
    assert written[0] == written[1] and "train/data-00000-of-00001.arrow" in written[0]


def tokenize_project(tmp_path, monkeypatch, train_rows, **settings):
    """A folder holding params.yaml (t5-small's tokenizer; tokenize.* and data.on_invalid from settings) and
    prepared splits: train_rows, and the bundled data's first rows as validation and test."""
    checkpoint = tmp_path / "t5"
    checkpoint.mkdir(parents=True)
    shutil.copy(T5_SMALL_TOKENIZER / "spiece.model", checkpoint)
    (checkpoint / "config.json").write_text('{"model_type": "t5"}')  # what AutoTokenizer reads the kind from
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["model"]["name"] = str(checkpoint)
    p["data"]["on_invalid"] = settings.pop("on_invalid", "error")
    p["tokenize"].update(settings)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    (tmp_path / "data/prepared").mkdir(parents=True)
    bundled, _, _ = squad.load_split(ROOT / "data/raw", "train[:20]")
    for split, rows in (("train", train_rows), ("validation", bundled.to_list()), ("test", bundled.to_list())):
        (tmp_path / "data/prepared" / f"{split}.jsonl").write_text(
            "".join(json.dumps({k: v for k, v in row.items() if k != "problem"}) + "\n" for row in rows))
    monkeypatch.chdir(tmp_path)


def row(qid, question, context, answer):
    return {"id": qid, "title": "", "question": question, "context": context,
            "answers": {"text": [answer], "answer_start": [context.index(answer)]}}


LONG_QUESTION = "Which of the towns that were founded in the eighteenth century was founded last? " * 4


def test_a_question_too_long_for_the_source_budget_is_named_or_dropped_and_counted(tmp_path, monkeypatch, capsys):
    rows = [row("q-long", LONG_QUESTION, LONG_CONTEXT, "London"),
            row("q1", "Where was Ada born?", LONG_CONTEXT, "London")]
    tokenize_project(tmp_path, monkeypatch, rows, max_source_length=48, stride=12)
    with pytest.raises(SystemExit) as e:
        tokenize.main()
    assert e.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: data/prepared/train.jsonl: id 'q-long': question: the question leaves its context no room in "
        "tokenize.max_source_length = 48 tokens: raise tokenize.max_source_length, or set data.on_invalid: drop to "
        "skip such questions")
    assert not (tmp_path / "data/tokenized").exists()
    tokenize_project(tmp_path / "drop", monkeypatch, rows, max_source_length=48, stride=12, on_invalid="drop")
    tokenize.main()
    report = by_split(tmp_path / "drop/metrics/tokenize.json")["train"]
    assert report["questions"] == 2 and report["questions_too_long"] == 1
    assert set(datasets.load_from_disk(str(tmp_path / "drop/data/tokenized"))["train"]["id"]) == {"q1"}


def test_a_split_left_without_training_examples_stops_with_the_cause(tmp_path, monkeypatch, capsys):
    answer = " ".join(f"Town {n} was founded in {1700 + n}." for n in range(10, 16))  # longer than any window
    tokenize_project(tmp_path, monkeypatch, [row("q1", "What happened?", LONG_CONTEXT, answer)],
                     max_source_length=32, stride=8)
    with pytest.raises(SystemExit):
        tokenize.main()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: data/prepared/train.jsonl: no train example: the answers of all 1 questions lie across the windows' "
        "edges, in no window of tokenize.max_source_length = 32 tokens sharing tokenize.stride = 8: raise either")


def test_closed_book_inputs_are_the_question_alone_and_the_extractive_ceiling_does_not_apply(tokenizer):
    out = encode(batch("London"), tokenizer, 512, 32, stride=8, reads_context=False)
    assert tokenizer.decode(out["input_ids"][0], skip_special_tokens=True) == "question: Where was Ada born?"
    assert tokenizer.decode(out["labels"][0], skip_special_tokens=True) == "London"  # the answer tokenized alone
    assert out["holds_answer"] == [True] and out["copyable"] == [False] and out["spellable"] == [True]
    assert out["offsets"] == [[(-1, -1)] * len(out["input_ids"][0])]
