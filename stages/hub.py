"""Tell local folders from Hugging Face Hub ids, fail fast when the Hub is out of reach, and load from either."""

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from stages.errors import InputError


def local_path(name, param):
    """The folder `name` names, or None for a Hub id; a path-like name that does not exist is an error.
    `owner/name` is a Hub id unless a folder `owner` is here (data/nope: a mistyped path)."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{param} = {name!r} is a file; point it at a folder")
        return path
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "/" in name and path.parent.is_dir():
        raise InputError(f"{param} = {name!r}: no such folder (from {Path.cwd()}); "
                         f"point {param} at a folder that exists, or at a Hugging Face Hub id")
    return None


def require_hub(name, param, local_hint):
    """Check the Hub answers before a library spends ~30 s retrying; offline mode uses the local cache."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError:
        raise InputError(
            f"{param} = {name!r} needs the Hugging Face Hub, and {host} cannot be reached; "
            f"{local_hint}, or set HF_HUB_OFFLINE=1 to use a copy already in your Hugging Face cache"
        ) from None


def from_pretrained(cls, name, **kwargs):
    """cls (a transformers Auto class) from model.name: a local folder, or a Hub id once the Hub answers."""
    folder = local_path(name, "model.name")
    if folder is None:
        require_hub(name, "model.name", "point model.name at a local checkpoint folder")
    try:  # never a checkpoint's own code: left unset, transformers would ask on a terminal whether to run it
        return cls.from_pretrained(folder or name, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as e:
        raise InputError(f"model.name = {name!r}: cannot load {cls.__name__} ({str(e).splitlines()[0]})") from None
