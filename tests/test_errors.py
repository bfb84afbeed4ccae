import subprocess

import pytest

from stages.errors import InputError, cli


def git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.mark.parametrize("failure", [InputError("data/raw/train.json: id 'q1': bad"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_stage_puts_back_the_git_tracked_outputs_dvc_removed(tmp_path, monkeypatch,
                                                                                      capsys, failure):
    """DVC removes a stage's outputs before it runs it (the run-cache needs them unpersisted): the stage puts
    back from git those that git tracks, so that `git status` shows only what the user changed."""
    (tmp_path / "metrics" / "breakdown").mkdir(parents=True)
    (tmp_path / "metrics" / "eval.json").write_text('{"f1": 1}\n')
    (tmp_path / "metrics" / "breakdown" / "f1.json").write_text("[]\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "results")
    (tmp_path / "metrics" / "eval.json").unlink()  # what `dvc repro` does before running the stage
    (tmp_path / "metrics" / "breakdown" / "f1.json").unlink()
    (tmp_path / "notes.txt").unlink()  # the user's own deletion stays
    monkeypatch.chdir(tmp_path)

    @cli(outputs=["metrics/eval.json", "metrics/breakdown"])
    def main():
        raise failure

    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == (1 if isinstance(failure, InputError) else 130)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert status.splitlines() == [" D notes.txt"]
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(("error: ", "interrupted: "))


def test_outside_a_git_checkout_a_failed_stage_just_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    @cli(outputs=["metrics/eval.json"])
    def main():
        raise InputError("params.yaml: not found")

    with pytest.raises(SystemExit):
        main()
    assert capsys.readouterr().err.strip() == "error: params.yaml: not found"
