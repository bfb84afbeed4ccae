import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_generator_reproduces_the_bundled_files(tmp_path):
    subprocess.run([sys.executable, "-m", "stages.synthetic", "--out", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True)
    for name in ["train.json", "validation.json"]:
        assert (tmp_path / name).read_bytes() == (ROOT / "data" / "raw" / name).read_bytes()


@pytest.mark.parametrize("split, questions_needed, golds", [("train", 22000, 1), ("validation", 1500, 2)])
def test_answers_are_exact_spans_with_a_distractor_of_their_type(split, questions_needed, golds):
    data = json.loads((ROOT / "data" / "raw" / f"{split}.json").read_text())
    questions = year_questions = 0
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            years = set(re.findall(r"\b\d{4}\b", context))
            for qa in paragraph["qas"]:
                questions += 1
                assert len(qa["answers"]) >= golds  # validation: several annotators, as in SQuAD's dev set
                for answer in qa["answers"]:
                    start = answer["answer_start"]
                    assert context[start:start + len(answer["text"])] == answer["text"]
                if qa["answers"][0]["text"] in years:
                    year_questions += 1
                    assert len(years) >= 2, (qa["id"], context)  # the asked year is not the only one
    assert questions >= questions_needed and year_questions >= questions_needed // 5  # the default splits fit
