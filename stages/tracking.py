"""Weights & Biases, when train.report_to names it: offline without an API key, grouped by DVC experiment.

The key only ever comes from the environment (WANDB_API_KEY) or `wandb login`; it is never read
from params or written anywhere by this project. Offline runs land in wandb/; `wandb sync wandb/offline-run-*`
uploads them later.
"""

import netrc
import os

PROJECT = "squad-t5-dvc"


def has_api_key():
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None  # where `wandb login` keeps it
    except (OSError, netrc.NetrcParseError):
        return False


def configure_wandb():
    """Environment that the Trainer's WandbCallback and wandb.init read."""
    if not has_api_key():
        os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_PROJECT", PROJECT)
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`: train and evaluate runs of one experiment side by side
        os.environ.setdefault("WANDB_RUN_GROUP", os.environ["DVC_EXP_NAME"])


def log_evaluation(summary, params):
    """The evaluate stage's metrics as a W&B run of its own (job type `evaluate`)."""
    import wandb

    configure_wandb()
    with wandb.init(job_type="evaluate", config=params) as run:
        run.log({f"test/{name}": value for name, value in summary.items()})
