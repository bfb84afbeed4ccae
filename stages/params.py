"""Read params.yaml and check every value before any stage does work.

Each entry of SCHEMA is a dotted param name, the type it must have and a range check.
All problems are reported at once, each with its dotted name.
"""

import difflib
import math
import re
from pathlib import Path

import yaml

from stages.errors import InputError

PARAMS_FILE = Path("params.yaml")
SPLIT_SPEC = re.compile(r"^(\w+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$")


FEED_FORWARD = ("relu", "gated-gelu")  # T5 v1.0's and v1.1's feed-forward blocks
REPORTERS = {"dvclive", "wandb"}  # dvclive is required: dvc.yaml's plots come from it
VARIANTS = ("extractive", "generative", "closed_book")  # the notebook's three kinds of question answering
RENAMED = {"evaluate.extractive": "task.variant: extractive (true), generative (false) or closed_book"}


def is_scratch(model_params):
    """Whether model.name builds a new model (model.scratch), which brings no tokenizer of its own."""
    return model_params["name"] == "scratch"


def positive(v):
    return v > 0


SCHEMA = {
    "seed": (int, lambda v: v >= 0, "an integer >= 0"),
    "task.variant": (str, lambda v: v in VARIANTS, "extractive, generative or closed_book"),
    "data.source": (str, bool, "a Hub dataset id or a local folder"),
    "data.splits.train": (str, SPLIT_SPEC.match, "a split slice such as train[:20000]"),
    "data.splits.validation": (str, SPLIT_SPEC.match, "a split slice such as train[20000:25000]"),
    "data.splits.test": (str, SPLIT_SPEC.match, "a split slice such as validation[:5000]"),
    "data.on_invalid": (str, lambda v: v in ("error", "drop"), "error or drop"),
    "data.shuffle": (bool, lambda v: True, "true or false"),
    "model.name": (str, bool, "a Hub model id, a local checkpoint folder or `scratch`"),
    "model.scratch.vocab_size": (int, lambda v: v >= 100, "an integer >= 100"),
    "model.scratch.d_model": (int, positive, "an integer > 0"),
    "model.scratch.d_ff": (int, positive, "an integer > 0"),
    "model.scratch.num_layers": (int, positive, "an integer > 0"),
    "model.scratch.num_heads": (int, positive, "an integer > 0"),
    "model.scratch.feed_forward_proj": (str, lambda v: v in FEED_FORWARD, "relu or gated-gelu"),
    "model.scratch.dropout": (float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "tokenize.max_source_length": (int, lambda v: v >= 8, "an integer >= 8"),
    "tokenize.max_target_length": (int, lambda v: v >= 2, "an integer >= 2"),
    "tokenize.train_answers": (str, lambda v: v in ("first", "all"), "first or all"),
    "tokenize.stride": (int, lambda v: v >= 8, "an integer >= 8 (windows share a few words)"),
    "tokenize.no_answer_windows": (float, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "train.lr": (float, lambda v: 0 < v < 1, "a number in (0, 1)"),
    "train.epochs": (float, positive, "a number > 0"),
    "train.batch_size": (int, positive, "an integer > 0"),
    "train.batch_tokens": (int, lambda v: v >= 0, "an integer >= 0 (0: no token budget)"),
    "train.packing": (bool, lambda v: True, "true or false"),
    "train.compile": (bool, lambda v: True, "true or false"),
    "train.warmup_steps": (int, lambda v: v >= 0, "an integer >= 0"),
    "train.weight_decay": (float, lambda v: v >= 0, "a number >= 0"),
    "train.save_steps": (int, positive, "an integer > 0"),
    "train.keep_checkpoints": (int, positive, "an integer > 0"),
    "train.eval_questions": (int, lambda v: v >= 0, "an integer >= 0 (0: eval loss only)"),
    "train.keep_best": (bool, lambda v: True, "true or false"),
    "train.launcher": (str, lambda v: v == "python" or v.startswith("accelerate launch "),
                       "python, or accelerate launch and its flags"),
    "train.report_to": (list, lambda v: "dvclive" in v and set(v) <= REPORTERS, "a list: dvclive, optionally wandb"),
    "evaluate.batch_size": (int, positive, "an integer > 0"),
    "evaluate.max_new_tokens": (int, positive, "an integer > 0"),
}

COMBINATIONS = [  # checked once every value has its type
    ("tokenize.stride", lambda p: p["tokenize"]["stride"] < p["tokenize"]["max_source_length"] // 2,
     "windows of a long context must advance by more than they share: keep it under half of "
     "tokenize.max_source_length"),
    ("train.packing", lambda p: not p["train"]["packing"] or p["train"]["batch_tokens"] > 0,
     "packed batches hold train.batch_tokens source tokens: set it, e.g. to 131072"),
    ("train.compile", lambda p: not (p["train"]["packing"] and p["train"]["compile"]),
     "train.packing compiles its own attention kernel and has not been measured with the whole step compiled: "
     "set train.compile: false with it"),
    ("train.keep_best", lambda p: not p["train"]["keep_best"] or p["train"]["eval_questions"] > 0,
     "the best epoch is the one of the best validation F1: set train.eval_questions > 0"),
]


def load(path=PARAMS_FILE):
    """Return params.yaml as nested dicts, with every SCHEMA entry checked and typed."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found; run from the repository root") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(params, dict):
        raise InputError(f"{path}: expected a mapping of stage sections")
    problems = []
    for name, (kind, ok, expected) in SCHEMA.items():
        *parents, leaf = name.split(".")
        section = params
        for key in parents:
            section = section.get(key) if isinstance(section, dict) else None
        if not isinstance(section, dict) or leaf not in section:
            problems.append(f"{name} is missing (expected {expected})")
            continue
        value = coerce(section[leaf], kind)
        if value is None or not ok(value):
            problems.append(f"{name} = {section[leaf]!r} is not {expected}")
        else:
            section[leaf] = value
    for name in leaves(params):
        if name in RENAMED:
            problems.append(f"{name} is now {RENAMED[name]}")
        elif name not in SCHEMA:  # a misspelt key would otherwise be ignored while its default is used
            guess = nearest(name)
            problems.append(f"{name} is not a param of this pipeline" + (f" (did you mean {guess}?)" if guess else ""))
    if not problems:
        problems = [f"{name}: {message}" for name, check, message in COMBINATIONS if not check(params)]
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return params


def nearest(name):
    """The known param `name` most likely meant: one of its section named by its initials
    (learning_rate: lr), else the closest spelling in its section, else anywhere."""
    section, _, leaf = name.rpartition(".")
    siblings = {known.rpartition(".")[2]: known for known in SCHEMA if known.rpartition(".")[0] == section}
    initials = "".join(word[0] for word in leaf.split("_") if word)
    if initials in siblings:
        return siblings[initials]
    close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.5)
    return siblings[close[0]] if close else next(iter(difflib.get_close_matches(name, SCHEMA, n=1, cutoff=0.5)), None)


def leaves(section, prefix=""):
    """The dotted names of a nested mapping's values, descending into the sections SCHEMA knows."""
    for key, value in section.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and any(known.startswith(f"{name}.") for known in SCHEMA):
            yield from leaves(value, f"{name}.")
        else:
            yield name


def coerce(value, kind):
    """The value as `kind`, or None. PyYAML reads `3e-4` as a string (YAML 1.1), DVC writes it so."""
    if isinstance(value, bool) != (kind is bool):
        return None
    if kind is float and isinstance(value, (int, float, str)):
        try:
            value = float(value)
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    return value if isinstance(value, kind) else None
