import difflib
import shutil
from pathlib import Path

import pytest
import yaml

from stages import params
from stages.errors import InputError

DEFAULTS = Path(__file__).resolve().parent.parent / "params.yaml"


def edited(tmp_path, edit):
    p = yaml.safe_load(DEFAULTS.read_text())
    edit(p)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def test_the_shipped_params_are_valid():
    p = params.load(DEFAULTS)
    assert isinstance(p["train"]["lr"], float)
    assert p["model"]["name"] == "scratch"


def test_exponent_written_by_dvc_reads_as_a_float(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(DEFAULTS, path)
    path.write_text(path.read_text().replace("lr: 7.0e-4", "lr: 3e-4"))
    assert params.load(path)["train"]["lr"] == pytest.approx(3e-4)


def test_every_problem_is_reported_at_once_with_its_dotted_name(tmp_path):
    def edit(p):
        p["train"]["lr"] = "fast"
        p["train"]["batch_size"] = 0
        p["data"]["splits"]["test"] = "validation[5000]"
        del p["evaluate"]["max_new_tokens"]
        p["data"]["on_invalid"] = "ignore"
    with pytest.raises(InputError) as e:
        params.load(edited(tmp_path, edit))
    message = str(e.value)
    for fragment in ["train.lr = 'fast'", "train.batch_size = 0", "data.splits.test = 'validation[5000]'",
                     "evaluate.max_new_tokens is missing", "data.on_invalid = 'ignore' is not error or drop"]:
        assert fragment in message
    assert "\n" not in message


def test_a_bool_is_not_an_integer_nor_a_string_a_bool(tmp_path):
    with pytest.raises(InputError, match="train.batch_size = True"):
        params.load(edited(tmp_path, lambda p: p["train"].update(batch_size=True)))
    with pytest.raises(InputError, match="train.keep_best = 'yes' is not true or false"):
        params.load(edited(tmp_path, lambda p: p["train"].update(keep_best="yes")))


def test_the_variant_is_one_of_three_and_the_old_switch_names_it(tmp_path):
    with pytest.raises(InputError, match="task.variant = 'open' is not extractive, generative or closed_book"):
        params.load(edited(tmp_path, lambda p: p["task"].update(variant="open")))

    def old_file(p):  # a params.yaml written before task.variant
        del p["task"]
        p["evaluate"]["extractive"] = False
    with pytest.raises(InputError) as e:
        params.load(edited(tmp_path, old_file))
    assert ("evaluate.extractive is now task.variant: extractive (true), generative (false) or closed_book"
            in str(e.value))


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        params.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [1,\n")
    with pytest.raises(InputError, match="not valid YAML"):
        params.load(tmp_path / "params.yaml")


def test_a_stride_too_small_to_share_words_is_an_error(tmp_path):
    with pytest.raises(InputError, match="tokenize.stride = 0 is not an integer >= 8"):
        params.load(edited(tmp_path, lambda p: p["tokenize"].update(stride=0)))


def test_a_stride_too_large_for_the_source_budget_is_an_error(tmp_path):
    path = edited(tmp_path, lambda p: p["tokenize"].update(stride=256, max_source_length=512))
    with pytest.raises(InputError, match="tokenize.stride: .* under half of tokenize.max_source_length"):
        params.load(path)
    params.load(edited(tmp_path, lambda p: p["tokenize"].update(stride=255)))


def test_keeping_the_best_epoch_needs_validation_questions(tmp_path):
    path = edited(tmp_path, lambda p: p["train"].update(keep_best=True, eval_questions=0))
    with pytest.raises(InputError, match="train.keep_best: the best epoch is the one of the best validation F1"):
        params.load(path)
    assert params.load(edited(tmp_path, lambda p: p["train"].update(keep_best=True)))["train"]["keep_best"] is True


def test_packing_is_not_compiled_whole(tmp_path):
    path = edited(tmp_path, lambda p: p["train"].update(packing=True, batch_tokens=4096))
    with pytest.raises(InputError, match="train.compile: train.packing compiles its own attention kernel"):
        params.load(path)
    path = edited(tmp_path, lambda p: p["train"].update(packing=True, batch_tokens=4096, compile=False))
    assert params.load(path)["train"]["packing"] is True


def test_an_unknown_key_is_an_error_naming_the_nearest_param(tmp_path):
    path = edited(tmp_path, lambda p: p["train"].update(learning_rate=3e-4))
    with pytest.raises(InputError, match=r"train.learning_rate is not a param of this pipeline \(did you mean train.lr"):
        params.load(path)
    with pytest.raises(InputError, match=r"colour is not a param of this pipeline$"):
        params.load(edited(tmp_path, lambda p: p.update(colour="blue")))


@pytest.mark.parametrize("override, changed", [
    ("train.lr=3e-4", ["-   lr: 7.0e-4", "+   lr: 0.0003"]),
    ("train.report_to=[dvclive,wandb]", ["+   - wandb"]),
    ("task.variant=generative", ["-   variant: extractive ", "+   variant: generative "]),
    ("data.splits.train='train[:5000]'", ["-     train: train[:20000]", "+     train: train[:5000]"]),
])
def test_dvc_exp_run_s_changes_only_the_lines_it_sets(tmp_path, override, changed):
    """`dvc exp run -S` rewrites params.yaml with its own YAML writer: params.yaml is in that writer's style,
    so the experiment's diff is what the user set and nothing else."""
    from dvc.utils.hydra import apply_overrides
    path = tmp_path / "params.yaml"
    shutil.copy(DEFAULTS, path)
    before = path.read_text().splitlines()
    apply_overrides(path, [override])
    diff = [line for line in difflib.ndiff(before, path.read_text().splitlines()) if line[0] in "+-"]
    assert len(diff) == len(changed) and all(line.startswith(start) for line, start in zip(diff, changed)), diff
