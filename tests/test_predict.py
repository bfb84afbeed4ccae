import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stages import modeling, predict, squad, vocabulary
from stages.errors import InputError
from tests.test_outputs import ascii_locale

ROOT = Path(__file__).resolve().parent.parent

QUESTION, CONTEXT = "When was Ada born?", "Ada was born in London in 1815."
SIZE = {"vocab_size": 60, "d_model": 32, "d_ff": 64, "num_layers": 1, "num_heads": 2,
        "feed_forward_proj": "gated-gelu", "dropout": 0.0}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model taught one answer, saved the way the train stage saves it."""
    text = f"question: {QUESTION} context: {CONTEXT}"
    tokenizer = vocabulary.train_tokenizer([text] * 20, SIZE["vocab_size"])
    model = modeling.build_model({"name": "scratch", "scratch": SIZE}, tokenizer)
    batch = tokenizer([text], return_tensors="pt")
    labels = tokenizer(text_target=["1815"], return_tensors="pt")["input_ids"]
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp("models")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def elsewhere(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # predict needs no params.yaml: it runs from any folder


def test_one_question_prints_the_answer(model_dir, capsys):
    predict.main(["--model", str(model_dir), "--question", QUESTION, "--context", CONTEXT])
    assert capsys.readouterr().out == "1815\n"


def test_a_file_of_questions_is_answered_in_order_with_its_fields_kept(model_dir, tmp_path, capsys):
    questions = tmp_path / "questions.jsonl"
    rows = [{"id": "a", "question": QUESTION, "context": CONTEXT}, {"id": "b", "question": QUESTION, "context": CONTEXT}]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    predict.main(["--model", str(model_dir), "--file", str(questions)])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out == [{**r, "answer": "1815"} for r in rows]


@pytest.mark.parametrize("content, message", [
    ('{"question": "Who?"}\n', r"line 1: field 'context' must be a non-empty string"),
    ('{"question": "Who?", "context": "Ada."}\n{oops\n', r"line 2: not JSON"),
    ("\n", r"no questions in it"),
])
def test_bad_question_files_name_the_line(model_dir, tmp_path, content, message):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(content)
    with pytest.raises(InputError, match=message):
        predict.read_questions(questions)


def test_a_folder_without_a_model_says_how_to_get_one(tmp_path):
    with pytest.raises(InputError, match=r"holds no trained model: run `dvc repro` to train it \(the default "
                                         r"pipeline: 10 to 26 min on a 2-core CPU"):
        modeling.load_trained(tmp_path)


def test_a_folder_that_is_no_model_is_named_with_what_to_point_at(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')  # some other kind of checkpoint
    with pytest.raises(SystemExit) as e:
        predict.main(["--model", str(tmp_path), "--question", QUESTION, "--context", CONTEXT])
    assert e.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: {tmp_path}/ is not a seq2seq model folder (")
    assert line.endswith("point at one the train stage wrote (models/, or one `dvc artifacts get` fetched)")


def test_the_model_reads_and_answers_as_its_config_says(model_dir, tmp_path, capsys):
    """What the train stage keeps in config.json (modeling.keep_reading) decides the source budget."""
    model, tokenizer = modeling.load_trained(model_dir)
    modeling.keep_reading(model, {"max_source_length": 12, "stride": 8, "max_target_length": 4})
    model.save_pretrained(tmp_path / "short")
    tokenizer.save_pretrained(tmp_path / "short")
    assert modeling.reading(model)["max_source_length"] == 12
    with pytest.raises(SystemExit):
        predict.main(["--model", str(tmp_path / "short"), "--question", QUESTION * 3, "--context", CONTEXT])
    assert "no room in tokenize.max_source_length = 12 tokens" in capsys.readouterr().err


def test_a_closed_book_model_answers_the_question_alone(model_dir, tmp_path, capsys):
    """A model trained closed-book (its config says so: modeling.keep_reading) reads the question alone,
    freely, from a file without contexts too; --context given to it, or withheld from a model that reads
    one, is one line saying which."""
    model, tokenizer = modeling.load_trained(model_dir)
    modeling.keep_reading(model, {"max_source_length": 64, "stride": 8, "max_target_length": 4}, context=False)
    closed = tmp_path / "closed"
    model.save_pretrained(closed)
    tokenizer.save_pretrained(closed)
    ids = model.generate(**tokenizer([squad.model_input(QUESTION, None)], return_tensors="pt"))[0]
    expected = " ".join(tokenizer.decode(ids, skip_special_tokens=True).split())  # plain generate() of the folder
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"id": "a", "question": QUESTION}) + "\n")
    predict.main(["--model", str(closed), "--file", str(questions)])
    assert json.loads(capsys.readouterr().out) == {"id": "a", "question": QUESTION, "answer": expected}
    for folder, context, message in [
            (closed, ["--context", CONTEXT], "this model answers from the question alone (trained closed-book): "
                                             "leave it out"),
            (model_dir, [], "this model reads the question with its context: give it")]:
        with pytest.raises(SystemExit) as e:
            predict.main(["--model", str(folder), "--question", QUESTION, *context])
        assert e.value.code == 1
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: --context: {message}"

def test_question_and_file_are_exclusive(model_dir):
    with pytest.raises(SystemExit):
        predict.main(["--question", QUESTION, "--file", "q.jsonl"])


def test_answers_in_any_script_print_whatever_the_locale(model_dir, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"id": "東京-1", "question": QUESTION, "context": CONTEXT}) + "\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "stages.predict", "--model", str(model_dir), "--file", str(questions)],
                         cwd=ROOT, env=ascii_locale(), capture_output=True, check=True).stdout
    assert json.loads(out.decode("utf-8")) == {"id": "東京-1", "question": QUESTION, "context": CONTEXT, "answer": "1815"}


def test_a_question_too_long_for_the_source_budget_is_named_with_the_param_to_raise(model_dir, capsys):
    with pytest.raises(SystemExit) as e:
        predict.main(["--model", str(model_dir), "--question", "Why? " * 600, "--context", CONTEXT])
    assert e.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --question: the question leaves its context no room in tokenize.max_source_length = 512 tokens, "
        "as this model was trained: shorten the question")
