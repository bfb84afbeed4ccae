import os

import pytest

from stages import tracking


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # configure_wandb's changes end with the test
    for name in ["WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_RUN_GROUP", "DVC_EXP_NAME"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    return monkeypatch


def test_without_a_key_wandb_runs_offline(clean_env):
    tracking.configure_wandb()
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_PROJECT"] == tracking.PROJECT


def test_a_key_in_the_environment_or_netrc_keeps_wandb_online(clean_env, tmp_path):
    clean_env.setenv("WANDB_API_KEY", "k" * 40)
    tracking.configure_wandb()
    assert "WANDB_MODE" not in os.environ
    clean_env.delenv("WANDB_API_KEY")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert tracking.has_api_key()


def test_runs_of_one_dvc_experiment_are_grouped(clean_env):
    clean_env.setenv("DVC_EXP_NAME", "rapt-lobe")
    tracking.configure_wandb()
    assert os.environ["WANDB_RUN_GROUP"] == "rapt-lobe"
