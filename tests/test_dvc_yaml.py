"""dvc.yaml must list, as deps of each stage, exactly the project modules its script imports."""

import ast
from pathlib import Path

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
