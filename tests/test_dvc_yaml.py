"""dvc.yaml must list, as deps of each stage, exactly the project modules its script imports, so that
editing a module re-runs the stages that use it and no other."""

import ast
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def project_imports(module, seen=None):
    """stages/*.py files `module` imports, directly or through other project modules, itself included."""
    seen = set() if seen is None else seen
    path = f"stages/{module}.py"
    if path in seen:
        return seen
    seen.add(path)
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages"):
            names = [node.module.split(".")[1]] if "." in node.module else [a.name for a in node.names]
            for name in names:
                project_imports(name, seen)
    return seen


def test_each_stage_depends_on_exactly_the_modules_it_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        launcher = "${train.launcher}" if name == "train" else "python"
        assert stage["cmd"] == f"{launcher} -m stages.{name}"
        declared = {d for d in stage["deps"] if d.startswith("stages/")}
        assert declared == project_imports(name), name


@pytest.mark.parametrize("module, reruns", [
    ("decoding", {"train", "evaluate"}),            # train answers validation questions with it
    ("spans", {"tokenize", "train", "evaluate"}),   # training targets and extractive answers share it
    ("evaluate", {"evaluate"}),
    ("modeling", {"tokenize", "train", "evaluate"}),
])
def test_editing_a_module_makes_dvc_status_report_only_the_stages_that_use_it(tmp_path, module, reruns):
    """`dvc status` itself, on a copy of the project whose dvc.lock holds the code as it is now."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for path in ["dvc.yaml", "params.yaml", *(str(p.relative_to(ROOT)) for p in (ROOT / "stages").glob("*.py"))]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    lock = {"schema": "2.0", "stages": {name: {"cmd": stage["cmd"], "deps": [
        {"path": dep, "hash": "md5", "md5": hashlib.md5((ROOT / dep).read_bytes()).hexdigest(),
         "size": (ROOT / dep).stat().st_size} for dep in stage["deps"] if dep.startswith("stages/")]}
        for name, stage in stages.items()}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    with open(tmp_path / f"stages/{module}.py", "a") as f:
        f.write("# edited\n")
    status = json.loads(subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=tmp_path, check=True,
                                       capture_output=True, text=True).stdout)
    reported = {stage for stage, changes in status.items() for change in changes
                if isinstance(change, dict) and f"stages/{module}.py" in change.get("changed deps", {})}
    assert reported == reruns
