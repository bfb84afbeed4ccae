"""Write outputs so that a failed or killed stage leaves the old complete output or none, in UTF-8 whatever the
locale."""

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged(path):
    """Yield a temporary sibling of `path` to fill; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(path)
    remove(tmp)
    try:
        yield tmp
        if path.is_dir():  # os.replace swaps files atomically, but cannot replace a non-empty folder
            remove(path)
        os.replace(tmp, path)
    finally:
        remove(tmp)


def staging_path(path):
    """Where staged() fills `path`: a hidden sibling, on the same file system so the rename is atomic."""
    return path.with_name(f".{path.name}.partial")


def remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path, obj):
    with staged(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_jsonl(path, rows):
    with staged(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
