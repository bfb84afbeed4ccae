"""End to end: `dvc repro` of a shrunk copy of this repo, then an experiment that re-runs only train + evaluate."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.metrics import METRICS

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ["stages", "dvc.yaml", "params.yaml", "data/raw", "data/.gitignore", ".dvc/config",
                 ".dvc/.gitignore", ".dvcignore", ".gitignore"]
TINY = {
    "data": {"splits": {"train": "train[:400]", "validation": "train[400:480]", "test": "validation[:60]"}},
    "model": {"scratch": {"vocab_size": 300, "d_model": 32, "d_ff": 64, "num_layers": 1, "num_heads": 2, "dropout": 0.0}},
    "train": {"epochs": 1, "batch_size": 16},
    "evaluate": {"max_new_tokens": 8},
}


def merge(into, changes):
    for key, value in changes.items():
        if isinstance(value, dict):
            merge(into[key], value)
        else:
            into[key] = value


def sh(cwd, *cmd):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    for name in PROJECT_FILES:
        src, dst = ROOT / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir()
         else shutil.copy(src, dst))
    p = yaml.safe_load((repo / "params.yaml").read_text())
    merge(p, TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny", "--allow-empty")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny params")
    return repo


def test_repro_trains_and_evaluates(repo):
    sh(repo, sys.executable, "-m", "dvc", "repro")
    scores = json.loads((repo / "metrics" / "eval.json").read_text())
    assert scores["questions"] == 60 and scores["missing_predictions"] == 0
    for name in METRICS:
        assert 0 <= scores[name] <= 100
    predictions = (repo / "data" / "predictions" / "test.jsonl").read_text().splitlines()
    assert len(predictions) == 60
    assert set(json.loads(predictions[0])) == {"id", "question", "answers", "prediction", "exact_match", "f1"}
    assert (repo / "models" / "model.safetensors").exists()
    assert (repo / "models" / "generation_config.json").exists()
    assert (repo / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").exists()
    assert (repo / "dvclive" / "plots" / "metrics" / "eval" / "loss.tsv").exists()
    assert "Data and pipelines are up to date" in sh(repo, sys.executable, "-m", "dvc", "status")


def test_changing_the_learning_rate_reruns_only_train_and_evaluate(repo):
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    out = sh(repo, sys.executable, "-m", "dvc", "exp", "run", "-S", "train.lr=3e-4")
    assert "Stage 'prepare' didn't change, skipping" in out
    assert "Stage 'tokenize' didn't change, skipping" in out
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    assert "train.lr" in sh(repo, sys.executable, "-m", "dvc", "params", "diff")
