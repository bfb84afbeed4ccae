"""dvc.yaml must list, as deps of each stage, exactly the project modules its script imports, so that
editing a module re-runs the stages that use it and no other."""

import ast
import hashlib
import json
import re
import shutil
import subprocess
import sys
from functools import reduce
from operator import getitem
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


def project_copy(folder):
    """The project's code, dvc.yaml and params.yaml in `folder`, with a dvc.lock that holds them as they
    are now (code and params; the data are absent), so that `dvc status` reports only what is edited."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for path in ["dvc.yaml", "params.yaml", *(str(p.relative_to(ROOT)) for p in (ROOT / "stages").glob("*.py"))]:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, folder / path)

    lock = {"schema": "2.0", "stages": {name: {
        "cmd": stage["cmd"],
        "deps": [{"path": dep, "hash": "md5", "md5": hashlib.md5((ROOT / dep).read_bytes()).hexdigest(),
                  "size": (ROOT / dep).stat().st_size} for dep in stage["deps"] if dep.startswith("stages/")],
        "params": {"params.yaml": {key: reduce(getitem, key.split("."), params) for key in stage["params"]}},
    } for name, stage in stages.items()}}
    (folder / "dvc.lock").write_text(yaml.safe_dump(lock))
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=folder, check=True)


def stages_reporting(folder, changed):
    """The stages `dvc status` says `changed` (a file, or params.yaml's dotted key) is a changed dep of."""
    status = json.loads(subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=folder, check=True,
                                       capture_output=True, text=True).stdout)
    deps = [(stage, change.get("changed deps", {})) for stage, changes in status.items() for change in changes
            if isinstance(change, dict)]
    return {stage for stage, changed_deps in deps  # a stage reading a whole section reports the section
            if changed in changed_deps or any(changed == key or changed.startswith(key + ".")
                                              for key in changed_deps.get("params.yaml", {}))}


@pytest.mark.parametrize("module, reruns", [
    ("decoding", {"train", "evaluate"}),            # train answers validation questions with it
    ("spans", {"tokenize", "train", "evaluate"}),   # training targets and extractive answers share it
    ("evaluate", {"evaluate"}),
    ("modeling", {"train", "evaluate"}),           # the tokenize stage needs the tokenizer alone
    ("vocabulary", {"tokenize"}),                   # the others load the tokenizer it saved
])
def test_editing_a_module_makes_dvc_status_report_only_the_stages_that_use_it(tmp_path, module, reruns):
    project_copy(tmp_path)
    assert stages_reporting(tmp_path, f"stages/{module}.py") == set()
    with open(tmp_path / f"stages/{module}.py", "a") as f:
        f.write("# edited\n")
    assert stages_reporting(tmp_path, f"stages/{module}.py") == reruns


@pytest.mark.parametrize("key, value, reruns", [
    # tokenize reads whether inputs hold the context: generative writes the extractive data again byte for byte,
    # so DVC then skips train (its deps unchanged); closed_book changes the data, so train follows
    ("task.variant", "generative", {"tokenize", "evaluate"}),
    ("task.variant", "closed_book", {"tokenize", "evaluate"}),
    ("evaluate.max_new_tokens", 8, {"evaluate"}),
    ("train.lr", 3e-4, {"train"}),
    ("tokenize.max_target_length", 16, {"tokenize", "train"}),
])
def test_trying_a_param_makes_dvc_status_report_only_the_stages_that_read_it(tmp_path, key, value, reruns):
    project_copy(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    section, name = key.split(".")
    params[section][name] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert stages_reporting(tmp_path, key) == reruns


def test_the_trained_model_is_declared_as_the_artifact_its_card_names():
    """`dvc artifacts get <repo> squad-t5` and DVC Studio's model registry find models/ by this entry."""
    from stages import card
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    artifact = dvc_yaml["artifacts"][card.ARTIFACT]
    assert artifact["path"] == "models" and artifact["type"] == "model" and artifact["desc"]
    assert set(artifact["meta"]) >= {"base_model", "task", "data_source"} and "question-answering" in artifact["labels"]
    outs = dvc_yaml["stages"]["train"]["outs"]
    assert "models" in [next(iter(out)) if isinstance(out, dict) else out for out in outs]


def test_the_folder_the_readme_puts_real_data_in_is_a_dependency_of_prepare():
    """Editing the files there re-runs prepare: DVC hashes the dependency folder, subfolders included."""
    source = re.search(r"-S data\.source=(data/\S+)", (ROOT / "README.md").read_text()).group(1)
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["prepare"]["deps"]
    assert any(Path(source).is_relative_to(dep) for dep in deps if not dep.startswith("stages/")), source
