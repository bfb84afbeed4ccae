import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages import prepare, squad
from stages.outputs import staging_path
from tests.conftest import by_split, squad_v1, squad_v2

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = ROOT / "params.yaml"


@pytest.fixture
def project(tmp_path, monkeypatch, small_squad):
    """A folder with params.yaml pointing at raw/ that holds train.json and validation.json."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "train.json").write_text(json.dumps(small_squad))
    (tmp_path / "raw" / "validation.json").write_text(json.dumps(squad_v1(
        ("Paris is in France.", [("v1", "Where is Paris?", "France")]))))
    p = yaml.safe_load(DEFAULTS.read_text())
    p["data"].update(source="raw", splits={"train": "train[:2]", "validation": "train[2:]",
                                           "test": "validation"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def set_params(project, **data):
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["data"].update(data)
    (project / "params.yaml").write_text(yaml.safe_dump(p))


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_writes_flat_splits_and_a_report(project):
    prepare.main()
    assert [r["id"] for r in read_jsonl("data/prepared/train.jsonl")] == ["q1", "q2"]
    assert [r["id"] for r in read_jsonl("data/prepared/test.jsonl")] == ["v1"]
    report = by_split("metrics/data.json")
    assert {split: row["rows"] for split, row in report.items()} == {"train": 2, "validation": 1, "test": 1}
    assert all(row["dropped"] == row["unanswerable"] == 0 and row["dropped_because"] == {} for row in report.values())
    assert report["train"]["source"] == "raw/train.json" and report["test"]["slice"] == "validation"


def test_each_file_is_read_once_though_two_splits_are_slices_of_it(project, monkeypatch):
    reads = []
    read_file = squad.read_file
    monkeypatch.setattr(squad, "read_file", lambda path: reads.append(path.name) or read_file(path))
    prepare.main()
    assert sorted(reads) == ["train.json", "validation.json"]  # train and validation both slice train.json
    assert len(read_jsonl("data/prepared/train.jsonl")) == 2 and read_jsonl("data/prepared/validation.jsonl")


def test_squad_v2_unanswerable_questions_are_kept_and_counted(project):
    (project / "raw" / "validation.json").write_text(json.dumps(squad_v2(
        "Paris is in France.", [("v1", "Where is Paris?", "France")], [("v2", "Where is Rome?")])))
    prepare.main()
    rows = read_jsonl("data/prepared/test.jsonl")
    assert [(r["id"], r["answers"]["text"]) for r in rows] == [("v1", ["France"]), ("v2", [])]
    assert by_split("metrics/data.json")["test"]["unanswerable"] == 1


def break_answer(project):
    data = json.loads((project / "raw" / "train.json").read_text())
    data["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 3
    (project / "raw" / "train.json").write_text(json.dumps(data))


def test_invalid_record_stops_with_its_id_and_field_and_writes_nothing(project, capsys):
    break_answer(project)
    with pytest.raises(SystemExit) as e:
        prepare.main()
    assert e.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]  # progress bars come before it
    assert line.startswith("error: raw/train.json: id 'q2': answers.answer_start: '1815' is not at 3 in the context; ")
    assert "data.on_invalid: drop" in line
    assert not Path("data").exists() and not Path("metrics").exists()


def test_drop_skips_invalid_records_and_reports_why(project):
    break_answer(project)
    set_params(project, on_invalid="drop")
    prepare.main()
    assert [r["id"] for r in read_jsonl("data/prepared/train.jsonl")] == ["q1"]
    report = by_split("metrics/data.json")["train"]
    assert report["dropped"] == 1
    assert report["dropped_because"] == {"answers.answer_start": 1}


def test_a_repeated_id_is_invalid_and_drop_keeps_its_first_record(project, capsys):
    data = json.loads((project / "raw" / "train.json").read_text())
    data["data"][0]["paragraphs"][0]["qas"][1]["id"] = "q1"
    (project / "raw" / "train.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit):
        prepare.main()
    assert "id 'q1': id: used by an earlier record too" in capsys.readouterr().err
    set_params(project, on_invalid="drop")
    prepare.main()
    first = data["data"][0]["paragraphs"][0]["qas"][0]
    assert [(r["id"], r["question"]) for r in read_jsonl("data/prepared/train.jsonl")] == [("q1", first["question"])]
    assert by_split("metrics/data.json")["train"]["dropped_because"] == {"id": 1}


def test_a_field_of_the_wrong_type_names_file_id_and_field_and_drop_drops_it(project, capsys):
    data = json.loads((project / "raw" / "train.json").read_text())
    data["data"][0]["paragraphs"][0]["qas"][1]["answers"] = "London"
    (project / "raw" / "train.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit):
        prepare.main()
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: raw/train.json: id 'q2': answers: expected a list of {text, answer_start} objects")
    set_params(project, on_invalid="drop")
    prepare.main()
    assert [r["id"] for r in read_jsonl("data/prepared/train.jsonl")] == ["q1"]
    report = by_split("metrics/data.json")["train"]
    assert report["dropped_because"] == {"answers": 1}
    assert report["unanswerable"] == 0  # the dropped record's emptied answers are not counted


def test_overlapping_train_and_validation_slices_stop_before_any_output(project, capsys):
    set_params(project, splits={"train": "train[:2]", "validation": "train[1:]", "test": "validation"})
    with pytest.raises(SystemExit):
        prepare.main()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: data.splits.train and data.splits.validation share rows 1-1 of raw/train.json: "
        "make the slices disjoint")
    assert not Path("data").exists()


def test_a_failed_run_keeps_the_previous_complete_output(project):
    prepare.main()
    before = Path("data/prepared/train.jsonl").read_text()
    set_params(project, splits={"train": "train[:2]", "validation": "train[2:]", "test": "validation[:9]"})
    with pytest.raises(SystemExit):
        prepare.main()
    assert Path("data/prepared/train.jsonl").read_text() == before
    assert sorted(p.name for p in Path("data").iterdir()) == ["prepared"]


def test_hub_id_offline_fails_fast_with_a_hint(project, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    set_params(project, source="squad")
    with pytest.raises(SystemExit):
        prepare.main()
    err = capsys.readouterr().err
    assert "data.source = 'squad' needs the Hugging Face Hub" in err
    assert "point data.source at a folder" in err


def test_a_kill_while_writing_leaves_the_previous_complete_output(project):
    """SIGKILL once the new output's temporary folder exists: the previous output stays whole."""
    shutil.copy(ROOT / "data" / "raw" / "train.json", project / "raw" / "train.json")  # big enough to catch
    set_params(project, splits={"train": "train[:20000]", "validation": "train[20000:21000]", "test": "validation"})
    prepare.main()
    before = {path.name: path.read_bytes() for path in Path("data/prepared").iterdir()}
    set_params(project, splits={"train": "train[:19000]", "validation": "train[20000:21000]", "test": "validation"})
    run = subprocess.Popen([sys.executable, "-m", "stages.prepare"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not staging_path(Path("data/prepared")).exists():  # staged() fills this, then renames it into place
        assert run.poll() is None, "prepare finished before it could be killed mid-write"
    run.kill()
    run.wait()
    assert {path.name: path.read_bytes() for path in Path("data/prepared").iterdir()} == before
    prepare.main()  # the next run replaces it whole and leaves no partial folder behind
    assert len(read_jsonl("data/prepared/train.jsonl")) == 19000
    assert sorted(p.name for p in Path("data").iterdir()) == ["prepared"]


def test_a_split_file_without_questions_says_so(project, capsys):
    (project / "raw" / "validation.json").write_text(json.dumps({"version": "1.1", "data": []}))
    with pytest.raises(SystemExit) as e:
        prepare.main()
    assert e.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: raw/validation.json: no questions in it (no paragraph has qas)")
    assert not Path("data").exists()


def test_an_unreadable_jsonl_line_stops_with_its_line_or_is_dropped_and_counted(project, capsys):
    rows = squad.read_file(project / "raw" / "train.json").remove_columns("problem").to_list()
    (project / "raw" / "train.json").unlink()
    (project / "raw" / "train.jsonl").write_text(
        "\n".join([json.dumps(rows[0]), '{"id": "q2", oops', json.dumps(rows[2])]) + "\n")
    with pytest.raises(SystemExit):
        prepare.main()
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: raw/train.jsonl: record 2 of train[:2]: record: line 2 is not valid JSON (")
    set_params(project, on_invalid="drop")
    prepare.main()
    assert [r["id"] for r in read_jsonl("data/prepared/train.jsonl")] == ["q1"]
    assert by_split("metrics/data.json")["train"]["dropped_because"] == {"record": 1}
