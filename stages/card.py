"""The model card, models/README.md: the trained model described where it travels (`dvc push`, `dvc artifacts
get`), in the Hugging Face format. YAML front matter (library, task, data, base checkpoint, validation scores
as model-index), then what the model is, what it learned from, the params that shaped it, its validation
curve, the tokenizer's ceilings, how to answer with it and its limits. The train stage writes it: it knows
these facts. The test split's scores are the evaluate stage's, in metrics/eval.json, which the card links.
"""

import json

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from stages import params

ARTIFACT = "squad-t5"  # dvc.yaml's artifacts: the name users fetch it by


def validation_curve(log_history):
    """(epoch, exact match, F1) of each evaluation the Trainer logged with answered validation questions."""
    return [(entry["epoch"], entry["eval_exact_match"], entry["eval_f1"]) for entry in log_history
            if "eval_f1" in entry]


def write(path, p, model, report, log_history):
    """models/README.md for `model`, trained with params `p`, on data whose tokenize report (a row per split)
    is `report`."""
    report = {row["split"]: row for row in report}
    curve = validation_curve(log_history)
    best = max(curve, key=lambda point: point[2], default=None)
    scratch = params.is_scratch(p["model"])
    source = p["data"]["source"]
    results = [EvalResult(task_type="question-answering", task_name="Question answering", dataset_type=source,
                          dataset_name=f"SQuAD-format data from {source}",
                          dataset_split=p["data"]["splits"]["validation"], metric_type=metric,
                          metric_name=f"{name} (best epoch, validation)", metric_value=value)
               for metric, name, value in (("exact_match", "Exact match", best and best[1]),
                                           ("f1", "F1", best and best[2])) if best]
    data = ModelCardData(model_name=ARTIFACT, library_name="transformers", pipeline_tag="text2text-generation",
                         datasets=[source], base_model=None if scratch else p["model"]["name"],
                         tags=["question-answering", "extractive-qa", "t5", "dvc"], eval_results=results or None)
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body(p, model, report, curve, best)}").save(path)


def body(p, model, report, curve, best):
    config = model.config
    shape = (f"{model.num_parameters():,} parameters: {config.model_type}, d_model {config.d_model}, "
             f"{getattr(config, 'num_layers', '?')} layer(s) each side, vocabulary {config.vocab_size:,}")
    origin = ("built from scratch (`model.name: scratch`), with a tokenizer trained on its training split"
              if params.is_scratch(p["model"]) else f"fine-tuned from `{p['model']['name']}`")
    splits = "\n".join(f"| {split} | `{p['data']['splits'][split]}` | {report[split]['questions']:,} | "
                       f"{report[split].get('examples', '-'):,} |" for split in ("train", "validation", "test"))
    shaped = "\n".join(f"| `{name}` | `{json.dumps(value)}` |" for name, value in flat(
        {"model": p["model"], "tokenize": p["tokenize"], "train": p["train"], "seed": p["seed"]}))
    points = "\n".join(f"| {epoch:g} | {em:.2f} | {f1:.2f} |" for epoch, em, f1 in curve) or "| - | - | - |"
    ceilings = "\n".join(f"| {split} | {nothing_to_copy(report[split]['exact_match_ceiling_extractive'])} | "
                         f"{report[split]['exact_match_ceiling_generation']} |"
                         for split in ("train", "validation", "test"))
    settings = config.task_specific_params["question-answering"]
    task = ("A sequence-to-sequence model that answers a question about a passage: it reads\n"
            "`question: <question> context: <passage>` and writes the answer, copied from the passage."
            if settings["context"] else
            "A sequence-to-sequence model that answers a question from what it learned in training, with no "
            "passage\n(closed book, `task.variant: closed_book`): it reads `question: <question>` and writes the "
            "answer.")
    validation = (f"Best epoch {best[0]:g}: exact match {best[1]:.2f}, F1 {best[2]:.2f}; last epoch {curve[-1][0]:g}: "
                  f"exact match {curve[-1][1]:.2f}, F1 {curve[-1][2]:.2f}." if best else
                  "No validation questions were answered (`train.eval_questions: 0`): eval loss only.")
    return f"""# {ARTIFACT}

{task}
{shape}; {origin}.

Trained by this project's DVC pipeline (`dvc repro`). At the same commit, `metrics/eval.json` holds this
model's scores on the test split and `dvclive/plots/metrics/eval/` its validation curves.

## Training data

SQuAD-format questions from `{p['data']['source']}` (`data.source`), sliced as below (`data.splits`). Long
contexts are read as windows of {settings['max_source_length']} tokens sharing {settings['stride']}.

| split | slice | questions | examples (windows trained or scored) |
| --- | --- | --- | --- |
{splits}

## Params that shaped it

| param | value |
| --- | --- |
{shaped}

## Validation

Validation questions answered after each epoch, extractively ({p['train']['eval_questions']} of them):
{validation}

| epoch | exact match | F1 |
| --- | --- | --- |
{points}

## The tokenizer's ceilings

The best exact match each way of answering can reach with this tokenizer (`metrics/tokenize.json`): copying
spans keeps characters the vocabulary lacks, free generation loses them.

| split | extractive | free generation |
| --- | --- | --- |
{ceilings}

## How to answer with it

Extractive, as the pipeline scores it (the answer is a span of the context, verbatim), with this project's
code from any folder:

```bash
python -m stages.predict --model path/to/this/folder --question "When was Danjunstad founded?" \\
  --context "Danjunstad is an old town. It was founded by Junras Renven in 1415."
```

Free generation with `transformers` alone (the answer is decoded text; long contexts are truncated):

```python
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
model = AutoModelForSeq2SeqLM.from_pretrained("path/to/this/folder")
inputs = tokenizer("question: When was Danjunstad founded? context: Danjunstad is an old town. "
                   "It was founded by Junras Renven in 1415.", return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs)[0], skip_special_tokens=True))
```

`config.json` keeps how the pipeline reads and answers (`task_specific_params["question-answering"]`),
and `generation_config.json` the answers' length ({settings['max_new_tokens']} tokens).

## Limits

- It answers from the passage it is given; it was never trained to know facts beyond it.
- Trained on {p['data']['source']}: {"the bundled data set's invented people, towns and companies, so "
  "it knows no real names and its scores say nothing about real text" if p['data']['source'] == 'data/raw'
  else "text like that data set's; other domains and languages may score far lower"}.
- Answers longer than {p['tokenize']['max_target_length']} tokens were cut in training; characters its
  vocabulary lacks come back only when it copies (extractive), not in free generation.
"""


def nothing_to_copy(ceiling):
    """The extractive ceiling, or why there is none: closed-book inputs hold no context to copy from."""
    return "does not apply (no context)" if ceiling is None else ceiling


def flat(section, prefix=""):
    """(dotted name, value) of a nested mapping's leaves."""
    for key, value in section.items():
        if isinstance(value, dict):
            yield from flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
