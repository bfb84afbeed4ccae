"""stages/__init__.py: the OpenMP setting that lets jobs on the same cores share them (bench/cpu_sharing.py)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHOW = "import os, stages, torch; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_NUM_THREADS'))"


def spin_settings(**env):
    environment = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    run = subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env={**environment, **env}, capture_output=True,
                         text=True, check=True)
    return run.stdout.split()


def test_a_stage_s_idle_threads_spin_briefly_and_thread_counts_are_left_alone():
    assert spin_settings() == ["3000", "None"]


def test_the_user_s_settings_stand():
    assert spin_settings(GOMP_SPINCOUNT="300000", OMP_NUM_THREADS="1") == ["300000", "1"]
