"""End to end: `dvc repro` of a shrunk copy of this repo, then an experiment that re-runs only train + evaluate."""

import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from transformers import AutoModelForSeq2SeqLM

from stages.metrics import METRICS
from tests.conftest import by_split

pytestmark = pytest.mark.slow  # each test runs dvc on a tiny copy of the project

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ["stages", "dvc.yaml", "params.yaml", "data/raw", "data/.gitignore", ".dvc/config",
                 ".dvc/.gitignore", ".dvc/plots", ".dvcignore", ".gitignore"]
TINY = {
    "data": {"splits": {"train": "train[:400]", "validation": "train[400:480]", "test": "validation[:60]"}},
    "model": {"scratch": {"vocab_size": 300, "d_model": 32, "d_ff": 64, "num_layers": 1, "num_heads": 2, "dropout": 0.0}},
    "tokenize": {"max_source_length": 48, "stride": 12},  # the bundled contexts become windows
    "train": {"epochs": 1, "batch_size": 16, "compile": False},  # compiled in a test of its own
    "evaluate": {"max_new_tokens": 8},
}


def merge(into, changes):
    for key, value in changes.items():
        if isinstance(value, dict):
            merge(into[key], value)
        else:
            into[key] = value


def sh(cwd, *cmd, env=None):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def commit(repo, message):
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def fresh_repo(tmp_path, **changes):
    """A new copy of the project with TINY params (and changes), committed, nothing run yet."""
    repo = tmp_path
    for name in PROJECT_FILES:
        src, dst = ROOT / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir()
         else shutil.copy(src, dst))
    p = yaml.safe_load((repo / "params.yaml").read_text())
    merge(p, TINY)
    merge(p, changes)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    sh(repo, "git", "init", "-q")
    commit(repo, "tiny params")
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return fresh_repo(tmp_path_factory.mktemp("repo"))


SECRETS = {"WANDB_API_KEY": "wandb-key-planted-by-the-test-0123456789",
           "AWS_SECRET_ACCESS_KEY": "aws-secret-planted-by-the-test-9876543210"}


def test_repro_trains_and_evaluates(repo):
    sh(repo, sys.executable, "-m", "dvc", "repro", env=SECRETS)
    scores = json.loads((repo / "metrics" / "eval.json").read_text())
    assert scores["questions"] == 60 and scores["missing_predictions"] == 0
    for name in METRICS:
        assert 0 <= scores[name] <= 100
    predictions = (repo / "data" / "predictions" / "test.jsonl").read_text().splitlines()
    assert len(predictions) == 60
    contexts = {row["id"]: row["context"] for row in map(json.loads, (repo / "data" / "prepared" / "test.jsonl")
                                                        .read_text().splitlines())}
    windows = by_split(repo / "metrics" / "tokenize.json")
    assert windows["test"]["windowed"] > 0 and windows["test"]["windows"] > 60
    assert windows["train"]["answers_in_no_window"] == 0 and windows["train"]["examples"] >= 400
    long_contexts = scores["long_contexts"]
    assert long_contexts["questions"] == windows["test"]["windowed"]
    assert 0 <= long_contexts["answers_changed_by_windowing"] <= long_contexts["questions"]
    assert set(json.loads(predictions[0])) == {"id", "question", "answers", "prediction", "exact_match", "f1"}
    assert (repo / "models" / "model.safetensors").exists()
    assert (repo / "models" / "generation_config.json").exists()
    assert (repo / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").exists()
    assert (repo / "dvclive" / "plots" / "metrics" / "eval" / "loss.tsv").exists()
    for name in ("exact_match", "f1", "rougeL"):  # validation questions answered after each epoch
        curve = (repo / "dvclive" / "plots" / "metrics" / "eval" / f"{name}.tsv").read_text().splitlines()
        assert curve[0] == f"step\t{name}" and len(curve) == 2  # one epoch
    assert windows["test"]["exact_match_ceiling_extractive"] >= windows["test"]["exact_match_ceiling_generation"]
    for line in predictions:  # extractive answers are spans of their own context
        row = json.loads(line)
        assert row["prediction"] in contexts[row["id"]]
    assert "Data and pipelines are up to date" in sh(repo, sys.executable, "-m", "dvc", "status")
    # secrets in the environment reach no output, lock file, log or metric
    files = [path for path in repo.rglob("*") if path.is_file() and ".git" not in path.parts]
    assert len(files) > 20
    for path in files:
        content = path.read_bytes()
        assert not any(secret.encode() in content for secret in SECRETS.values()), path


EVALUATE_OUTPUTS = ["data/predictions", "metrics/breakdown", "metrics/eval.json"]
# SIGKILL the evaluate stage as it opens the k-th temporary file to write, or renames the k-th into place
KILL_AT = """
import os, signal, sys
seen = 0
def kill_at(event, args):
    global seen
    if event == sys.argv[1] and ".partial" in str(args[0]) and (event != "open" or "w" in (args[1] or "")):
        seen += 1
        if seen == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(kill_at)
from stages import evaluate
evaluate.main()
"""


def contents(repo, output):
    path = repo / output
    files = sorted(path.rglob("*")) if path.is_dir() else [path] if path.exists() else []
    return {str(f.relative_to(repo)): f.read_bytes() for f in files}


# writes (open of a temporary file) and renames into place: predictions, breakdown (2 files), metrics
KILLS = [("open", 1), ("os.rename", 2), ("open", 3), ("open", 4), ("os.rename", 6)]


def test_a_killed_evaluate_leaves_each_output_whole_or_absent(repo):
    """Killed while writing each output, or just before renaming it into place, evaluate leaves it as it
    was (a folder may be gone, killed between removing the old one and renaming the new): never half-written."""
    before = {output: contents(repo, output) for output in EVALUATE_OUTPUTS}
    for event, k in KILLS:
        run = subprocess.run([sys.executable, "-c", KILL_AT, event, str(k)], cwd=repo, capture_output=True)
        assert run.returncode == -signal.SIGKILL, f"{event} #{k} never happened: {run.stderr.decode()[-2000:]}"
        for output in EVALUATE_OUTPUTS:
            assert contents(repo, output) in (before[output], {}), (event, k, output)
        assert contents(repo, "metrics/eval.json") == before["metrics/eval.json"]  # a file is swapped atomically
    sh(repo, sys.executable, "-m", "stages.evaluate")
    assert {output: contents(repo, output) for output in EVALUATE_OUTPUTS} == before
    assert not list(repo.rglob("*.partial"))  # the next run clears what the kills left


def test_changing_the_learning_rate_reruns_only_train_and_evaluate(repo):
    commit(repo, "baseline")
    out = sh(repo, sys.executable, "-m", "dvc", "exp", "run", "-S", "train.lr=3e-4")
    assert "Stage 'prepare' didn't change, skipping" in out
    assert "Stage 'tokenize' didn't change, skipping" in out
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    assert "train.lr" in sh(repo, sys.executable, "-m", "dvc", "params", "diff")


def lock_md5(repo, stage, out, rev=None):
    """The hash dvc.lock (of the workspace, or of git revision `rev`) records for a stage's output."""
    lock = yaml.safe_load(sh(repo, "git", "show", f"{rev}:dvc.lock") if rev else (repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == out)


GIT_TRACKED_OUTPUTS = ["metrics", "dvclive"]
RAN_BEFORE = ("-S", "train.lr=3e-4", "-S", "train.report_to=[dvclive]")  # the experiment of the lr test


def test_params_that_already_ran_are_restored_from_the_run_cache_not_trained_again(repo):
    """The baseline commit ran at train.lr 7e-4, the experiment above at 3e-4. Going back to either, by
    `dvc repro` or `dvc exp run -S`, restores every stage's outputs from DVC's run-cache, git-tracked
    reports and curves included, as they were written, and trains nothing."""
    experiment = lock_md5(repo, "train", "models"), (repo / "metrics" / "eval.json").read_bytes()
    sh(repo, "git", "checkout", "--", "params.yaml")  # back to the baseline's 7e-4
    out = sh(repo, sys.executable, "-m", "dvc", "repro")
    assert "Stage 'train' is cached - skipping run, checking out outputs" in out
    assert "Stage 'evaluate' is cached - skipping run, checking out outputs" in out
    assert "Running stage" not in out
    assert lock_md5(repo, "train", "models") == lock_md5(repo, "train", "models", "HEAD")
    assert sh(repo, "git", "status", "--porcelain", "--", *GIT_TRACKED_OUTPUTS, "dvc.lock") == ""  # as committed
    out = sh(repo, sys.executable, "-m", "dvc", "exp", "run", "-S", "train.lr=3e-4")
    assert "Stage 'train' is cached - skipping run" in out and "Running stage" not in out
    assert (lock_md5(repo, "train", "models"), (repo / "metrics" / "eval.json").read_bytes()) == experiment


def test_the_model_s_bytes_depend_on_data_params_and_code_not_on_how_the_run_started(repo):
    """The baseline's model came from `dvc repro`; trained again as an experiment (DVC_EXP_NAME set, its
    run in another process and order), the same params give the same bytes."""
    sh(repo, "git", "checkout", "--", "params.yaml")
    out = sh(repo, sys.executable, "-m", "dvc", "exp", "run", "--force")
    assert "Running stage 'train'" in out
    assert lock_md5(repo, "train", "models") == lock_md5(repo, "train", "models", "HEAD")
    sh(repo, sys.executable, "-m", "dvc", "exp", "run", "-S", "train.lr=3e-4")  # the experiment's results, cached


def test_compiled_training_gives_the_same_model_bytes_run_after_run(tmp_path):
    """train.compile (the default): the first run compiles afresh, the second with inductor's cache of the
    first; the model's bytes are the same (inductor's atomic adds are left to PyTorch: stages/train.py)."""
    compiled = fresh_repo(tmp_path / "repo", train={"compile": True})
    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}  # empty: a fresh machine
    sh(compiled, sys.executable, "-m", "dvc", "repro", env=env)
    first = lock_md5(compiled, "train", "models")
    out = sh(compiled, sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "train", env=env)
    assert "Running stage 'train'" in out
    assert lock_md5(compiled, "train", "models") == first


def test_pr_report_diffs_metrics_and_params_and_flags_a_stale_lock(repo):
    commit(repo, "lr 3e-4")  # the experiment's results, as a PR branch would commit them
    report = sh(repo, sys.executable, str(ROOT / ".ci" / "pr-report"), "HEAD~1", "--smoke")
    assert "| train.lr" in report and "| metrics/eval.json" in report and "exact_match" in report
    assert "dvc.lock matches" in report and "Smoke run on a short config" in report
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params_file.write_text(original.replace("warmup_steps: 100", "warmup_steps: 50"))
    try:
        assert "**dvc.lock is out of date** for train" in sh(repo, sys.executable, str(ROOT / ".ci" / "pr-report"), "HEAD~1")
    finally:
        params_file.write_text(original)


DROPPED = re.search(r"--drop '([^']+)'", (ROOT / "README.md").read_text()).group(1).replace("\\|", "|")  # README


def test_exp_show_lists_the_projects_params_and_metrics_not_timings(repo):
    table = sh(repo, sys.executable, "-m", "dvc", "exp", "show", "--csv")
    header = table.splitlines()[0]
    assert "train.lr" in header and "exact_match" in header
    assert not re.search(r"runtime|per_second|flos|output_dir|system", header), header
    columns = header.split(",")
    assert columns[columns.index("exact_match"):][:2] == ["exact_match", "f1"]  # the headline leads
    assert "train.windows" not in columns and "rows.train" not in columns  # reports stay files, not columns
    compact = sh(repo, sys.executable, "-m", "dvc", "exp", "show", "--csv", "--only-changed", "--drop", DROPPED)
    compact_header = compact.splitlines()[0]
    assert compact_header.startswith("Experiment")
    assert not re.search(r"rouge1|precision|long_contexts|data/|models|stages/", compact_header), compact_header


def test_plots_include_training_system_and_error_analysis(repo):
    metrics = repo / "dvclive" / "plots" / "metrics"
    assert (metrics / "loss.tsv").exists() and (metrics / "learning_rate.tsv").exists()
    assert list((metrics / "system").glob("cpu/*.tsv")), "DVCLive's monitor_system wrote no CPU metrics"
    by_word = json.loads((repo / "metrics" / "breakdown" / "question_word.json").read_text())
    assert sum(row["questions"] for row in by_word) == 60
    assert {"question_word", "f1", "exact_match"} <= set(by_word[0])


def test_plots_render_offline_in_a_browser(repo, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium installed (.ci/run installs Debian's chromium)")
    sh(repo, sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "cdn.jsdelivr.net" not in page  # .dvc/plots/offline.html inlines Vega
    plots = re.findall(r"vegaEmbed\('#([^']+)'", page)
    assert len(plots) >= 5 and any("question_word" in p for p in plots) and any("system" in p for p in plots)
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", (tmp_path / "plots" / "index.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    drawn = re.findall(r'<canvas width="(\d+)" height="(\d+)"[^>]*class="marks"', dom)
    assert len(drawn) == len(plots) and all(int(w) > 0 and int(h) > 0 for w, h in drawn)


def test_plots_diff_overlays_revisions(repo, tmp_path):
    sh(repo, sys.executable, "-m", "dvc", "plots", "diff", "HEAD~1", "-o", str(tmp_path / "diff"))
    page = (tmp_path / "diff" / "index.html").read_text()
    assert '"rev": "HEAD~1"' in page and '"rev": "workspace"' in page


def test_wandb_runs_offline_and_never_writes_the_key(repo, tmp_path):
    key = "0123456789abcdef0123456789abcdef01234567"  # a made-up 40-character key
    env = {"WANDB_API_KEY": key, "WANDB_MODE": "offline", "HOME": str(tmp_path)}
    out = sh(repo, sys.executable, "-m", "dvc", "exp", "run", "-S", "train.report_to=[dvclive,wandb]", env=env)
    runs = sorted((repo / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, runs  # the train run (loss, eval loss, system) and the evaluate run (EM, F1, ROUGE)
    assert all(list(run.glob("run-*.wandb")) for run in runs)
    assert key not in out
    for path in repo.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert key.encode() not in path.read_bytes(), path


def test_push_then_a_fresh_clone_pulls_identical_artifacts(repo):
    commit(repo, "results")
    sh(repo, sys.executable, "-m", "dvc", "push")  # the default remote: a folder beside the repo
    clone = repo.parent / "clone"
    sh(repo.parent, "git", "clone", "-q", str(repo), str(clone))
    asked = subprocess.run([sys.executable, "-m", "stages.predict", "--question", "Who?", "--context", "Ada."],
                           cwd=clone, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert asked.stderr.strip().splitlines()[-1] == "error: models/ holds no trained model: run `dvc pull models` " \
                                                    "(the remote holds it)"
    sh(clone, sys.executable, "-m", "dvc", "pull")
    for folder in ["models", "data/prepared", "data/tokenized", "data/predictions"]:
        files = sorted(p.relative_to(repo) for p in (repo / folder).rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(clone) for p in (clone / folder).rglob("*") if p.is_file())
        for f in files:
            assert (repo / f).read_bytes() == (clone / f).read_bytes(), f
    assert "Data and pipelines are up to date" in sh(clone, sys.executable, "-m", "dvc", "status")


def test_a_second_clone_restores_any_run_made_in_the_first_and_trains_nothing(repo):
    """`python -m stages.share` here (dvc push, the run-cache and every remembered run's outputs), `dvc pull`
    in a second clone: there, going to the params of any run made here restores it instead of training."""
    out = sh(repo, sys.executable, "-m", "stages.share")
    assert re.search(r"pushed the workspace, \d+ run records and \d+ more of their outputs", out), out
    clone = repo.parent / "run-cache-clone"
    sh(repo.parent, "git", "clone", "-q", str(repo), str(clone))
    sh(clone, sys.executable, "-m", "dvc", "pull", "--run-cache")
    p = yaml.safe_load((clone / "params.yaml").read_text())
    p["train"].update(lr=3e-4, report_to=["dvclive"])  # RAN_BEFORE
    (clone / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    out = sh(clone, sys.executable, "-m", "dvc", "repro", "--pull")
    assert "Stage 'train' is cached - skipping run" in out and "Running stage" not in out, out[-2000:]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ARTIFACT = "squad-t5"  # dvc.yaml's artifacts
ANSWER_WITH_TRANSFORMERS = """
import sys
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForSeq2SeqLM.from_pretrained(sys.argv[1])
inputs = tokenizer(model.config.task_specific_params["question-answering"]["input"].format(
    question=sys.argv[2], context=sys.argv[3]), return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs)[0], skip_special_tokens=True))
"""


def test_the_model_ships_by_name_as_a_registered_version_or_stage_and_answers_anywhere(repo, tmp_path):
    """After `dvc push`: `dvc artifacts get` by name (its latest registered version), by version and by
    stage, from a path to the repository and from a clone; the folder, its model card included, answers
    through transformers alone and through stages.predict, run from another working directory."""
    for key, value in (("user.name", "t"), ("user.email", "t@t")):  # gto's tags are annotated
        sh(repo, "git", "config", key, value)
    sh(repo, "gto", "register", ARTIFACT)  # sh() puts this Python's bin/ first on PATH
    sh(repo, "gto", "assign", ARTIFACT, "--version", "v0.0.1", "--stage", "prod")
    clone = repo.parent / "artifact-clone"  # beside the repository: the same default remote
    sh(repo.parent, "git", "clone", "-q", str(repo), str(clone))
    expected = {p.name: p.read_bytes() for p in (repo / "models").iterdir()}
    for source, how in ((repo, []), (clone, []), (repo, ["--rev", "v0.0.1"]), (clone, ["--stage", "prod"])):
        out = tmp_path / f"{source.name}{''.join(how)}"
        sh(tmp_path, sys.executable, "-m", "dvc", "artifacts", "get", str(source), ARTIFACT, *how, "-o", str(out))
        assert {p.name: p.read_bytes() for p in out.iterdir()} == expected, (source, how)

    fetched = tmp_path / repo.name
    card = ModelCard.load(fetched / "README.md")
    assert card.data.library_name == "transformers" and card.data.model_name == ARTIFACT
    assert card.data.eval_results and card.data.datasets == ["data/raw"]
    context = "Danjunstad is an old town. It was founded by Junras Renven in 1415."
    question = "When was Danjunstad founded?"
    free, extractive = (subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=True,
                                       env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip() for cmd in (
        [sys.executable, "-c", ANSWER_WITH_TRANSFORMERS, str(fetched), question, context],
        [sys.executable, "-m", "stages.predict", "--model", str(fetched), "--question", question, "--context", context]))
    assert free and extractive and extractive in context


@pytest.fixture
def s3_server(tmp_path):
    """moto's S3-compatible server on a free port of 127.0.0.1, with a bucket and test credentials."""
    import boto3
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    deadline = time.time() + 30
    while True:
        try:
            client.create_bucket(Bucket="dvc-store")
            break
        except Exception:
            assert time.time() < deadline, "moto_server did not start"
            time.sleep(0.3)
    yield endpoint, credentials, client
    server.terminate()
    server.wait()


def test_s3_remote_round_trip(repo, s3_server):
    endpoint, credentials, client = s3_server
    sh(repo, sys.executable, "-m", "dvc", "remote", "add", "s3", "s3://dvc-store/squad-t5")
    sh(repo, sys.executable, "-m", "dvc", "remote", "modify", "--local", "s3", "endpointurl", endpoint)
    commit(repo, "s3 remote")
    assert endpoint not in (repo / ".dvc" / "config").read_text()  # machine-specific: .dvc/config.local
    sh(repo, sys.executable, "-m", "dvc", "push", "-r", "s3", env=credentials)
    assert client.list_objects_v2(Bucket="dvc-store", Prefix="squad-t5/")["KeyCount"] > 0
    clone = repo.parent / "s3-clone"
    sh(repo.parent, "git", "clone", "-q", str(repo), str(clone))
    sh(clone, sys.executable, "-m", "dvc", "remote", "modify", "--local", "s3", "endpointurl", endpoint)
    sh(clone, sys.executable, "-m", "dvc", "pull", "-r", "s3", env=credentials)
    assert (clone / "models" / "model.safetensors").read_bytes() == (repo / "models" / "model.safetensors").read_bytes()
    assert "Data and pipelines are up to date" in sh(clone, sys.executable, "-m", "dvc", "status")
    # the model by name from the S3 remote, as a consumer without the repository's config.local fetches it
    sh(repo, "gto", "register", ARTIFACT)  # a version whose .dvc/config has the S3 remote
    consumer = repo.parent / "s3-consumer"
    sh(repo.parent, "git", "clone", "-q", str(repo), str(consumer))
    sh(repo.parent, sys.executable, "-m", "dvc", "artifacts", "get", str(consumer), ARTIFACT, "--remote", "s3",
       "--remote-config", f"endpointurl={endpoint}", "-o", str(repo.parent / "s3-artifact"), env=credentials)
    assert ((repo.parent / "s3-artifact" / "model.safetensors").read_bytes()
            == (repo / "models" / "model.safetensors").read_bytes())


def test_exp_push_carries_the_experiments_model_to_the_remote(repo):
    origin = repo.parent / "origin.git"
    sh(repo.parent, "git", "init", "-q", "--bare", str(origin))
    sh(repo, "git", "remote", "add", "origin", str(origin))
    sh(repo, "git", "push", "-q", "origin", "HEAD")
    out = sh(repo, sys.executable, "-m", "dvc", "exp", "run", "-S", "train.lr=2e-3")
    name = re.search(r"Ran experiment\(s\): (\S+)", out).group(1)
    sh(repo, sys.executable, "-m", "dvc", "exp", "push", "origin", name)
    assert name in sh(repo, "git", "ls-remote", str(origin))
    # a fresh clone of origin gets the experiment and, from the DVC remote, its model
    clone = repo.parent / "exp-clone"
    sh(repo.parent, "git", "clone", "-q", str(origin), str(clone))
    sh(clone, sys.executable, "-m", "dvc", "exp", "pull", "origin", name)
    sh(clone, sys.executable, "-m", "dvc", "exp", "apply", name)
    assert yaml.safe_load((clone / "params.yaml").read_text())["train"]["lr"] in (2e-3, "2e-3")
    assert (clone / "models" / "model.safetensors").read_bytes() == (repo / "models" / "model.safetensors").read_bytes()


# 4 epochs: each trains for seconds, so two runs started together overlap despite a worker starting late
GRID = ("-S", "train.lr=1e-4,5e-4", "-S", "train.epochs=4")


def test_a_queued_grid_runs_and_its_results_can_be_applied_and_branched(repo):
    commit(repo, "before the grid")
    sh(repo, sys.executable, "-m", "dvc", "exp", "run", "--queue", *GRID)
    run_queue(repo, workers=1)
    rows = grid_rows(repo)
    assert len(rows) == 2 and all(row["exact_match"] for row in rows)
    name = next(row["Experiment"] for row in rows if row["train.lr"] in ("1e-4", "0.0001") and row["Experiment"])
    sh(repo, sys.executable, "-m", "dvc", "exp", "apply", name)
    assert float(yaml.safe_load((repo / "params.yaml").read_text())["train"]["lr"]) == 1e-4
    sh(repo, sys.executable, "-m", "dvc", "exp", "branch", name, "lr-1e-4")
    assert "lr-1e-4" in sh(repo, "git", "branch")


def test_a_queued_run_of_params_that_already_ran_is_restored_not_trained(repo):
    sh(repo, "git", "checkout", "--", ".")  # a queued run starts from the workspace: not the grid's 4 epochs
    out = sh(repo, sys.executable, "-m", "dvc", "exp", "run", "--queue", *RAN_BEFORE)
    name = re.search(r"Queued experiment '([^']+)'", out).group(1)
    run_queue(repo, workers=1)
    log = sh(repo, sys.executable, "-m", "dvc", "queue", "logs", name)
    assert "Stage 'train' is cached - skipping run" in log and "Running stage 'train'" not in log, log[-2000:]


def run_queue(repo, workers):
    """dvc queue start -j workers, wait until the queue is done, then until its workers have exited: an idle
    worker lingers up to 10 s, and the next `queue start` counts it instead of starting a fresh one."""
    queue = (sys.executable, "-m", "dvc", "queue")
    sh(repo, *queue, "start", "-j", str(workers))
    deadline = time.time() + 300
    while re.search(r"\b(Queued|Running)\b", status := sh(repo, *queue, "status")):
        assert time.time() < deadline, "the queue did not finish in 5 minutes"
        time.sleep(1)
    assert status.count("Success") >= 2 and "Failed" not in status, status
    sh(repo, *queue, "stop")
    while "Worker status: 0 active, 0 idle" not in sh(repo, *queue, "status"):
        assert time.time() < deadline, "the queue's workers did not exit"
        time.sleep(1)


def run_interval(repo, rev):
    """When an experiment trained: the first and last timestamps of DVCLive's system metrics (git-tracked)."""
    tsv = sh(repo, "git", "show", f"{rev}:dvclive/plots/metrics/system/cpu/usage (%).tsv")
    stamps = [float(line.split("\t")[0]) for line in tsv.splitlines()[1:]]
    return min(stamps), max(stamps)


def grid_rows(repo):
    rows = csv.DictReader(io.StringIO(sh(repo, sys.executable, "-m", "dvc", "exp", "show", "--csv")))
    return [row for row in rows if row["train.lr"] in ("1e-4", "5e-4", "0.0001", "0.0005") and row["Experiment"]]


def test_two_queued_experiments_run_at_once_without_interfering(repo):
    before = {float(row["train.lr"]): row for row in grid_rows(repo)}  # the grid run one at a time, above
    # --force: run every stage again rather than restore the same params' results from DVC's run cache
    sh(repo, sys.executable, "-m", "dvc", "exp", "run", "--queue", "--force", *GRID)
    run_queue(repo, workers=2)
    runs = [row for row in grid_rows(repo) if row["Experiment"] not in {r["Experiment"] for r in before.values()}]
    assert len(runs) == 2
    (start_a, end_a), (start_b, end_b) = (run_interval(repo, row["rev"]) for row in runs)
    assert start_a < end_b and start_b < end_a  # they trained at the same time
    for row in runs:  # and each ended as it did alone
        alone = before[float(row["train.lr"])]
        assert (row["exact_match"], row["f1"], row["rougeL"]) == (alone["exact_match"], alone["f1"], alone["rougeL"])


def test_switching_the_variant_reruns_only_the_stages_it_changes(repo):
    """generative answers with the extractive model: tokenize re-runs and writes the same bytes, so train is
    skipped; closed_book reads the question alone, so train follows, and evaluate scores it as the others."""
    dvc = (sys.executable, "-m", "dvc")
    sh(repo, "git", "checkout", "--", ".")  # the committed workspace, its outputs checked out
    sh(repo, *dvc, "checkout", "--force")
    out = sh(repo, *dvc, "exp", "run", "-S", "task.variant=generative")
    assert "Stage 'prepare' didn't change, skipping" in out and "Running stage 'tokenize'" in out
    assert "Stage 'train' didn't change, skipping" in out and "Running stage 'evaluate'" in out
    out = sh(repo, *dvc, "exp", "run", "-S", "task.variant=closed_book")
    assert "Stage 'prepare' didn't change, skipping" in out
    assert all(f"Running stage '{stage}'" in out for stage in ("tokenize", "train", "evaluate"))
    assert by_split(repo / "metrics" / "tokenize.json")["test"]["reads_context"] is False
    assert json.loads((repo / "metrics" / "eval.json").read_text())["questions"] == 60
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, *dvc, "checkout", "--force")


def test_squad_v2_data_trains_the_model_to_say_no_answer(tmp_path):
    """v2 files (unanswerable questions: is_impossible, no answers) through the four stages: the target
    of an unanswerable question is the empty answer, and evaluation reports v2.0's has/no-answer split."""
    articles = json.loads((ROOT / "data" / "raw" / "train.json").read_text())["data"][:60]
    paragraphs = [paragraph for article in articles for paragraph in article["paragraphs"]]
    for n, paragraph in enumerate(paragraphs):  # a question no paragraph answers, beside each one's own
        paragraph["qas"].append({"id": f"none-{n}", "question": "Who painted the Mona Lisa?",
                                 "is_impossible": True, "answers": [], "plausible_answers": []})
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "train.json").write_text(json.dumps({"version": "v2.0", "data": articles[:50]}))
    (tmp_path / "raw" / "validation.json").write_text(json.dumps({"version": "v2.0", "data": articles[50:]}))
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    merge(p, TINY)
    merge(p, {"data": {"source": "raw", "splits": {"train": "train[:-40]", "validation": "train[-40:]",
                                                    "test": "validation"}},
              "tokenize": {"max_source_length": 512, "stride": 128}, "train": {"epochs": 30, "lr": 3e-3}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    env = {"PYTHONPATH": str(ROOT)}
    for stage in ("prepare", "tokenize", "train", "evaluate"):
        sh(tmp_path, sys.executable, "-m", f"stages.{stage}", env=env)
    report = by_split(tmp_path / "metrics" / "data.json")
    scores = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert report["test"]["unanswerable"] == scores["no_answer"]["questions"] > 0
    assert scores["has_answer"]["questions"] + scores["no_answer"]["questions"] == scores["questions"]
    predictions = [json.loads(line) for line in (tmp_path / "data/predictions/test.jsonl").read_text().splitlines()]
    answered = [row["prediction"] != "" for row in predictions if row["answers"]]
    # it learned to say nothing to the question nothing answers, and only to it
    assert scores["no_answer"]["exact_match"] >= 80 and sum(answered) >= len(answered) / 2  # 100, 25 of 32 measured


RESUMABLE = {"train": {"epochs": 8, "save_steps": 10, "keep_checkpoints": 2}}
TWO_PROCESSES = "accelerate launch --multi_gpu --num_processes 2 --main_process_port {port}"  # DDP over gloo


def processes_in(repo):
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == repo.resolve():
                pids.append(int(proc.name))
        except OSError:  # gone already, or not ours
            pass
    return pids


def checkpoint_epoch(checkpoint):
    return json.loads((checkpoint / "trainer_state.json").read_text())["epoch"]


@pytest.mark.parametrize("processes", [1, 2])
def test_a_killed_training_resumes_mid_epoch_and_ends_with_the_uninterrupted_model(tmp_path, processes):
    from stages.train import last_checkpoint
    launcher = "python" if processes == 1 else TWO_PROCESSES.format(port=free_port())
    params = {"train": {**RESUMABLE["train"], "launcher": launcher}}
    whole = fresh_repo(tmp_path / "whole", **params)
    out = sh(whole, sys.executable, "-m", "dvc", "repro")
    assert f"{processes} process(es)" in out and out.count("model: scratch") == 1  # only the main process speaks
    losses = [line.split("\t") for line in (whole / "dvclive/plots/metrics/loss.tsv").read_text().splitlines()[1:]]
    assert len({step for step, _ in losses}) == len(losses) > 1  # each step logged once
    assert float(losses[-1][1]) < float(losses[0][1])  # it learns
    assert not list(whole.glob("checkpoints/*")) and not list(whole.glob(".*.partial"))

    cut = fresh_repo(tmp_path / "cut", **params)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=cut, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    # pre-empted in the middle of a later epoch, whose batch order must be that epoch's again
    while not (cut / "checkpoints").exists() or not any(
            checkpoint_epoch(last_checkpoint(key, processes)) > 1 for key in (cut / "checkpoints").iterdir()
            if last_checkpoint(key, processes)):
        assert run.poll() is None and time.monotonic() < deadline, "training ended before a checkpoint in epoch 2"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)  # dvc and the launcher, with no chance to clean up ...
    run.wait()
    deadline = time.monotonic() + 10
    while processes_in(cut):  # ... and torchrun's workers, in sessions of their own, die with their launcher
        assert time.monotonic() < deadline, "training processes outlived their launcher"
        time.sleep(0.1)
    assert not (cut / "models").exists()
    resumable = last_checkpoint(next((cut / "checkpoints").iterdir()), processes)
    assert 1 < checkpoint_epoch(resumable) < 2, checkpoint_epoch(resumable)

    out = sh(cut, sys.executable, "-m", "dvc", "repro")
    assert f"resuming from {resumable.relative_to(cut)}" in out
    assert not list(cut.glob("checkpoints/*"))  # a finished run leaves nothing to resume
    # same final model: identical weights, hence identical answers and metrics
    assert (cut / "models" / "model.safetensors").read_bytes() == (whole / "models" / "model.safetensors").read_bytes()
    assert (cut / "metrics" / "eval.json").read_text() == (whole / "metrics" / "eval.json").read_text()
    assert AutoModelForSeq2SeqLM.from_pretrained(cut / "models").num_parameters() > 0


def test_checkpoints_of_other_params_are_not_resumed(tmp_path):
    repo = fresh_repo(tmp_path, **RESUMABLE)
    stale = repo / "checkpoints" / "0123456789abcdef" / "checkpoint-10"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text('{"global_step": 10}')
    (stale / "rng_state.pth").write_bytes(b"")  # complete, but of other params
    out = sh(repo, sys.executable, "-m", "dvc", "repro")
    assert "resuming" not in out


def porcelain(repo):
    return sh(repo, "git", "status", "--porcelain").splitlines()


def test_failed_and_interrupted_runs_leave_git_status_as_the_user_left_it(repo):
    """DVC deletes a stage's outputs before running it, and DVCLive writes as training goes: a failed
    or interrupted run must still leave every git-tracked file as it was, but for the user's edits."""
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "before")
    raw, params_file = repo / "data" / "raw" / "train.json", repo / "params.yaml"
    original_raw, original_params = raw.read_text(), params_file.read_text()
    try:
        raw.write_text(original_raw.replace('"answer_start": ', '"answer_start": 9999', 1))  # bad data
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # as sh()
        failed = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, capture_output=True,
                                text=True)
        assert failed.returncode == 255 and "answers.answer_start" in failed.stderr
        assert porcelain(repo) == [" M data/raw/train.json"]
        raw.write_text(original_raw)

        p = yaml.safe_load(original_params)
        p["train"].update(lr=1.23e-4, epochs=20)  # params no run had (DVC's run cache cannot skip it), long
        params_file.write_text(yaml.safe_dump(p, sort_keys=False))
        shutil.rmtree(repo / "checkpoints", ignore_errors=True)  # killed runs of earlier tests left theirs
        # Ctrl-C as a terminal's foreground job gets it: a launcher run in the background (`cmd &` in a script)
        # hands its children SIGINT ignored, and then nothing could stop on it
        run = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 300
        while not list((repo / "checkpoints").glob("*/dvclive/plots/metrics/*.tsv")):  # training is logging
            assert run.poll() is None and time.time() < deadline, run.communicate()
            time.sleep(0.2)
        assert run.poll() is None  # 20 epochs: far from done
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
        _, err = run.communicate(timeout=120)
        assert run.returncode != 0
        stopped = [line for line in err.splitlines() if line.startswith("interrupted:")]
        assert len(stopped) == 1 and "training stopped" in stopped[0] and "`dvc repro`" in stopped[0], err[-3000:]
        assert "Traceback" not in err
        assert porcelain(repo) == [" M params.yaml"]
    finally:
        raw.write_text(original_raw)
        params_file.write_text(original_params)
        shutil.rmtree(repo / "checkpoints", ignore_errors=True)
        sh(repo, sys.executable, "-m", "dvc", "checkout")
    assert "Data and pipelines are up to date" in sh(repo, sys.executable, "-m", "dvc", "status")
