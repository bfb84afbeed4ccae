"""Wheels for a GPU machine that cannot reach a package index, as the ones bench/gpu.sh ran on: Python 3.12,
linux x86-64, PyTorch and common packages already installed (IMAGE). Collects, from this project's
installed environment, every package the stages need that such a machine lacks or has in another
version, into .whl/ (git-ignored), at the versions installed here.

    .venv/bin/python bench/gpu_wheels.py    # here; there, the install line in bench/gpu.sh's header
"""

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOTS = ["transformers", "datasets", "tokenizers", "accelerate", "safetensors", "sentencepiece", "rouge-score",
         "dvc", "dvclive", "nvidia-ml-py"]  # pyyaml and tqdm too, but IMAGE has them
# the machine's own, used as they are (versions seen there, where known: bench/README.md)
IMAGE = {"torch", "numpy", "pandas", "pyarrow", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "absl-py",
         "aiohttp", "aiohappyeyeballs", "aiosignal", "frozenlist", "multidict", "propcache", "yarl", "attrs",
         "anyio", "h11", "idna", "certifi", "charset-normalizer", "urllib3", "requests", "click", "colorama",
         "pyyaml", "regex", "psutil", "packaging", "pyparsing", "six", "python-dateutil", "typing-extensions",
         "pygments", "rich", "markdown-it-py", "mdurl", "tabulate", "joblib", "cloudpickle", "setuptools",
         "shellingham", "typer", "annotated-doc", "hf-xet", "xxhash", "filelock", "pathspec", "tqdm"}
PLATFORMS = ["manylinux1_x86_64", "manylinux2014_x86_64",
             *(f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35))]
OUT = Path(__file__).resolve().parent.parent / ".whl"


def needed():
    """{package: version} for the ROOTS and everything they require on Python 3.12, less IMAGE."""
    found, todo = {}, list(ROOTS)
    while todo:
        package = canonicalize_name(todo.pop())
        if package in found or package in IMAGE:
            continue
        dist = metadata.distribution(package)
        found[package] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if not requirement.marker or requirement.marker.evaluate({"extra": "", "python_version": "3.12"}):
                todo.append(requirement.name)
    return found


def main():
    OUT.mkdir(exist_ok=True)
    binary = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
              *(arg for platform in PLATFORMS for arg in ("--platform", platform))]
    pip = [sys.executable, "-m", "pip", "-q"]
    for package, version in sorted(needed().items()):
        spec = f"{package}=={version}"
        if subprocess.run([*pip, "download", "--no-deps", *binary, "-d", OUT, spec], capture_output=True).returncode:
            subprocess.run([*pip, "wheel", "--no-deps", "-w", OUT, spec], check=True)  # sdist only: pure Python
    size = sum(f.stat().st_size for f in OUT.glob("*.whl"))
    print(f"{len(list(OUT.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {OUT}")


if __name__ == "__main__":
    main()
