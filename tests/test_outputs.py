import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stages.outputs import staged, staging_path, write_json

ROOT = Path(__file__).resolve().parent.parent


def test_staged_replaces_the_old_output_only_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged(out) as tmp:
            tmp.mkdir()
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial folder left behind
    assert (out / "old.txt").read_text() == "old"

    with staged(out) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]


def test_write_json_creates_parents(tmp_path):
    write_json(tmp_path / "a" / "b.json", {"x": 1.5})
    assert json.loads((tmp_path / "a" / "b.json").read_text()) == {"x": 1.5}


def test_a_kill_mid_write_leaves_the_previous_predictions(tmp_path):
    """The evaluate stage writes its predictions with write_jsonl: SIGKILL one mid-write."""
    path = tmp_path / "test.jsonl"
    path.write_text('{"id": "old"}\n')
    writer = subprocess.Popen([sys.executable, "-c", f"from stages.outputs import write_jsonl; write_jsonl("
                               f"{str(path)!r}, ({{'id': i, 'prediction': 'x' * 50}} for i in range(3_000_000)))"],
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    partial = staging_path(path)
    while not partial.exists() or partial.stat().st_size < 1_000_000:  # well into writing
        assert writer.poll() is None, "the writer finished before it could be killed"
    writer.kill()
    writer.wait()
    assert path.read_text() == '{"id": "old"}\n'


def ascii_locale():
    """The environment of a machine whose locale is C and that has not turned on Python's UTF-8 mode."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LC_", "PYTHONIOENCODING"))}
    return {**env, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONPATH": str(ROOT)}


def test_outputs_are_utf8_whatever_the_locale(tmp_path):
    one, two = {"answer": "東京 Łódź"}, {"answer": "Москва"}
    script = (f"import locale; assert locale.getpreferredencoding() != 'UTF-8'; from stages.outputs import "
              f"write_json, write_jsonl; write_json({str(tmp_path / 'a.json')!r}, {ascii(one)}); "
              f"write_jsonl({str(tmp_path / 'b.jsonl')!r}, [{ascii(two)}])")  # ascii(): argv is read as ASCII too
    subprocess.run([sys.executable, "-c", script], env=ascii_locale(), check=True)
    assert json.loads((tmp_path / "a.json").read_bytes().decode("utf-8")) == one
    assert json.loads((tmp_path / "b.jsonl").read_bytes().decode("utf-8")) == two
