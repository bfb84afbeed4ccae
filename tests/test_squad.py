import json

import datasets
import pytest

from stages import squad
from stages.errors import InputError


def test_nested_json_is_flattened_to_squad_rows(tmp_path, write_json, small_squad):
    write_json("train.json", small_squad)
    rows, origin, rows_range = squad.load_split(str(tmp_path), "train")
    assert rows_range == (0, 3)
    assert origin == str(tmp_path / "train.json")
    assert rows.column_names == ["id", "title", "context", "question", "answers", "problem"]
    assert rows["problem"] == [None] * 3
    assert rows["id"] == ["q1", "q2", "q3"]
    assert rows[1]["answers"] == {"text": ["1815"], "answer_start": [35]}
    assert rows[2]["title"] == "Article 1"


@pytest.mark.parametrize("spec, ids", [
    ("train[:2]", ["q1", "q2"]),
    ("train[1:]", ["q2", "q3"]),
    ("train[-1:]", ["q3"]),
    ("train[:34%]", ["q1"]),
])
def test_slices_follow_hugging_face_syntax(tmp_path, write_json, small_squad, spec, ids):
    write_json("train.json", small_squad)
    assert squad.load_split(str(tmp_path), spec)[0]["id"] == ids


@pytest.mark.parametrize("spec, message", [
    ("train[:4]", "asks for row 4, but .* has only 3 rows"),
    ("train[2:1]", "selects no rows"),
    ("train[:x]", "not of the form"),
])
def test_bad_slices_are_errors_not_silent_shrinks(tmp_path, write_json, small_squad, spec, message):
    write_json("train.json", small_squad)
    with pytest.raises(InputError, match=message):
        squad.load_split(str(tmp_path), spec)


def test_flat_jsonl_and_parquet_read_the_same_as_nested_json(tmp_path, write_json, small_squad):
    write_json("train.json", small_squad)
    nested = squad.load_split(str(tmp_path), "train")[0]
    flat = tmp_path / "flat"
    flat.mkdir()
    nested.to_json(flat / "train.jsonl", lines=True)
    nested.to_parquet(flat / "validation.parquet")
    assert squad.load_split(str(flat), "train")[0].to_list() == nested.to_list()
    assert squad.load_split(str(flat), "validation")[0].to_list() == nested.to_list()


def test_truncated_json_names_the_file(tmp_path, small_squad):
    (tmp_path / "train.json").write_text(json.dumps(small_squad)[:-30])
    with pytest.raises(InputError, match=r"train\.json, line 1, column \d+: not valid JSON"):
        squad.load_split(str(tmp_path), "train")


def test_json_without_squad_structure_is_rejected(tmp_path, write_json):
    write_json("train.json", {"data": [{"title": "x", "text": "no paragraphs"}]})
    with pytest.raises(InputError, match="expected SQuAD v1.1 / v2.0 JSON"):
        squad.load_split(str(tmp_path), "train")


def test_flat_records_missing_a_field_name_it(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "a", "context": "c", "answers": {}}) + "\n")
    with pytest.raises(InputError, match="no field question"):
        squad.load_split(str(tmp_path), "train")


def test_missing_and_ambiguous_split_files(tmp_path, write_json, small_squad):
    with pytest.raises(InputError, match="no test.json, test.jsonl or test.parquet"):
        squad.load_split(str(tmp_path), "test")
    write_json("train.json", small_squad)
    write_json("train.jsonl", {})
    with pytest.raises(InputError, match="ambiguous"):
        squad.load_split(str(tmp_path), "train")


def test_a_path_that_does_not_exist_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="no such folder"):
        squad.load_split(str(tmp_path / "nope"), "train")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # data/nope: a mistyped folder, not the Hub dataset `nope` of a user `data`
    with pytest.raises(InputError, match=r"^data.source = 'data/nope': no such folder"):
        squad.load_split("data/nope", "train")


def row(**changes):
    base = {"id": "q1", "title": "", "context": "Ada was born in 1815.", "question": "When?",
            "answers": {"text": ["1815"], "answer_start": [16]}}
    return {**base, **changes}


@pytest.mark.parametrize("changes, problem", [
    ({}, None),
    ({"context": "  "}, ("context", "empty")),
    ({"question": None}, ("question", "missing")),
    ({"answers": {"text": [], "answer_start": []}}, None),  # unanswerable (SQuAD v2.0)
    ({"answers": None}, ("answers", "missing")),
    ({"answers": {"text": ["1815"], "answer_start": [15]}}, ("answers.answer_start", "'1815' is not at 15 in the context")),
    ({"answers": {"text": ["1815", "Ada"], "answer_start": [16]}}, ("answers", "text and answer_start differ in length")),
    ({"id": None}, ("id", "missing")),
    ({"id": 7}, ("id", "expected a string, got a number (7)")),
    ({"answers": "London"}, ("answers", 'expected a list of {text, answer_start} objects (flat files: '
                                        '{text: [...], answer_start: [...]}), got a string ("London")')),
    ({"answers": {"text": ["1815"], "answer_start": ["16"]}},
     ("answers.answer_start", 'expected a whole number (a character index), got a string ("16")')),
    ({"answers": {"text": ["1815"], "answer_start": [16.0]}},
     ("answers.answer_start", "expected a whole number (a character index), got a number (16.0)")),
    ({"answers": {"text": ["18"], "answer_start": [-5]}},  # context[-5:-3] is "18": Python's slicing would agree
     ("answers.answer_start", "-5 is negative; expected the index of the answer's first character in the context")),
    ({"answers": {"text": "1815", "answer_start": [16]}}, ("answers.text", 'expected a list, got a string ("1815")')),
])
def test_problem_names_the_field_and_what_is_wrong(changes, problem):
    found = squad.problem(row(**changes))
    assert found == (squad.Problem(*problem) if problem else None)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_records_with_fields_of_the_wrong_type_are_read_and_carry_their_problem(tmp_path, small_squad, suffix):
    """Arrow cannot put a string and a list in one column: such files are read record by record."""
    qas = small_squad["data"][0]["paragraphs"][0]["qas"]
    qas[0]["answers"] = "London"
    qas[1]["answers"][0]["answer_start"] = "35"
    if suffix == ".json":
        (tmp_path / "train.json").write_text(json.dumps(small_squad))
    else:
        nested = tmp_path / "nested.json"
        nested.write_text(json.dumps({"data": small_squad["data"][1:]}))
        good = squad.read_file(nested).remove_columns("problem").to_list()[0]
        records = [{**good, "id": "q1", "answers": "London"},
                   {**good, "id": "q2", "answers": {"text": ["Rhine"], "answer_start": ["4"]}}, good]
        (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = squad.read_file(tmp_path / f"train{suffix}")
    assert rows["id"] == ["q1", "q2", "q3"]
    assert rows["problem"][0] == {"field": "answers", "reason": rows["problem"][0]["reason"]}
    assert rows["problem"][0]["reason"].endswith('got a string ("London")')
    assert rows["problem"][1]["field"] == "answers.answer_start" and "a string" in rows["problem"][1]["reason"]
    assert rows["problem"][2] is None and rows["answers"][0] is None


def test_an_empty_file_says_it_is_empty(tmp_path):
    (tmp_path / "train.json").write_text("")
    with pytest.raises(InputError, match=r"train\.json: the file is empty"):
        squad.read_file(tmp_path / "train.json")
    (tmp_path / "train.jsonl").write_text("\n")
    with pytest.raises(InputError, match=r"train\.jsonl: the file is empty"):
        squad.read_file(tmp_path / "train.jsonl")


def test_model_input_format():
    assert squad.model_input("Who?", "Ada.") == "question: Who? context: Ada."


def test_shuffled_slices_are_a_seeded_random_sample_and_stay_disjoint(tmp_path):
    rows = [{"id": f"q{i}", "title": "t", "context": "c", "question": "q?",
             "answers": {"text": ["c"], "answer_start": [0]}} for i in range(20)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = list(squad.load_split(str(tmp_path), "train[:10]", shuffle_seed=0)[0]["id"])
    rest = list(squad.load_split(str(tmp_path), "train[10:]", shuffle_seed=0)[0]["id"])
    assert sorted(first + rest, key=lambda i: int(i[1:])) == [r["id"] for r in rows]
    assert first != [f"q{i}" for i in range(10)]  # not the consecutive rows
    assert list(squad.load_split(str(tmp_path), "train[:10]", shuffle_seed=0)[0]["id"]) == first
    assert list(squad.load_split(str(tmp_path), "train[:10]", shuffle_seed=1)[0]["id"]) != first


def test_overlapping_slices_of_one_split_are_named_together():
    squad.check_disjoint({"data.splits.train": ("raw/train.json", (0, 100)),
                          "data.splits.validation": ("raw/train.json", (100, 120)),
                          "data.splits.test": ("raw/validation.json", (0, 50))})
    with pytest.raises(InputError, match=r"^data.splits.train and data.splits.validation share rows 90-99 of "
                                         r"raw/train.json: make the slices disjoint$"):
        squad.check_disjoint({"data.splits.train": ("raw/train.json", (0, 100)),
                              "data.splits.validation": ("raw/train.json", (90, 120)),
                              "data.splits.test": ("raw/validation.json", (0, 50))})


def test_a_v2_file_keeps_unanswerable_questions_with_empty_answers(tmp_path, write_json):
    from tests.conftest import squad_v2
    path = write_json("dev-v2.json", squad_v2("Ada was born in London.", [("a1", "Where was Ada born?", "London")],
                                              [("n1", "Where did Ada die?")]))
    rows = squad.read_file(path)
    assert [(r["id"], r["answers"]["text"]) for r in rows] == [("a1", ["London"]), ("n1", [])]
    assert [squad.problem(r) for r in rows] == [None, None]


def test_a_parquet_column_of_another_type_is_named_as_an_input_error(tmp_path):
    datasets.Dataset.from_dict({"id": ["a"], "context": ["x London"], "question": ["q"],
                                "answers": ["London"]}).to_parquet(tmp_path / "train.parquet")
    with pytest.raises(InputError, match=r"train\.parquet: columns of other types than SQuAD's"):
        squad.read_file(tmp_path / "train.parquet")


@pytest.mark.parametrize("document", [{"data": []}, {"data": [{"title": "T", "paragraphs": [{"context": "Ada."}]}]},
                                      {"data": [{"title": "T", "paragraphs": [{"context": "Ada.", "qas": []}]}]}])
def test_a_file_without_questions_says_so(tmp_path, document):
    (tmp_path / "train.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match=r"train\.json: no questions in it \(no paragraph has qas\)"):
        squad.read_file(tmp_path / "train.json")


def test_prepared_splits_keep_their_types_however_their_values_look(tmp_path):
    """A split whose every answer, id and title is an ISO date: JSON's type inference would make them timestamps."""
    rows = [{"id": f"2001-01-0{i}", "title": "2001-01-01", "context": f"It opened on 2001-01-0{i}.",
             "question": "When?", "answers": {"text": [f"2001-01-0{i}"], "answer_start": [13]}} for i in range(1, 4)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert squad.read_prepared(tmp_path / "test.jsonl").to_list() == rows


@pytest.mark.parametrize("version", ["v1.1", "v2.0"])
def test_the_official_file_names_are_read_as_they_are(tmp_path, write_json, small_squad, version):
    """SQuAD's own train-v1.1.json / dev-v1.1.json (v2.0 alike): the dev file is the validation split."""
    write_json(f"train-{version}.json", small_squad)
    write_json(f"dev-{version}.json", small_squad)
    assert squad.load_split(str(tmp_path), "train[:2]")[1] == str(tmp_path / f"train-{version}.json")
    assert squad.load_split(str(tmp_path), "validation")[1] == str(tmp_path / f"dev-{version}.json")
    write_json("train.json", small_squad)
    with pytest.raises(InputError, match=r"split 'train' is ambiguous \(train\.json, train-v.\..\.json\)"):
        squad.load_split(str(tmp_path), "train")


def test_a_slice_beyond_its_file_names_the_row_count_and_the_param(tmp_path, write_json, small_squad):
    write_json("train.json", small_squad)
    with pytest.raises(InputError, match=r"^data.splits.validation = 'train\[2:22000\]' asks for row 22000, but "
                                         r".*train\.json has only 3 rows: set data.splits.validation within them, "
                                         r"e\.g\. train\[2:3\]$"):
        squad.load_split(str(tmp_path), "train[2:22000]", param="data.splits.validation")


def test_an_unreadable_json_line_is_a_record_with_its_problem(tmp_path, small_squad, write_json):
    """So that data.on_invalid: drop skips it, as it skips a record with a bad field."""
    write_json("nested.json", small_squad)
    good = [json.dumps(r) for r in squad.read_file(tmp_path / "nested.json").remove_columns("problem").to_list()]
    (tmp_path / "train.jsonl").write_text("\n".join([good[0], '{"id": "q2", "context": oops', good[2]]) + "\n")
    rows = squad.read_file(tmp_path / "train.jsonl")
    assert rows["id"] == ["q1", None, "q3"]
    assert rows["problem"][1] == {"field": "record", "reason": "line 2 is not valid JSON (Expecting value, column 25)"}
