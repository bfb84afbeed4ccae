import json
from pathlib import Path

import pytest
import torch
from transformers import T5Tokenizer

from stages import windows

SQUAD_SAMPLE = Path(__file__).parent / "data" / "squad-sample"  # three real SQuAD v1.1 articles (CC BY-SA 4.0)
# Unicode the vocabulary lacks, brackets, quotes and NFKC's 5½: what copying answers verbatim must survive
CONTEXT = ("Chopin left Warsaw for Vienna (1830) and later played in Kraków, Łódź and Poznań; "
           "critics called him \"the poet of the piano\". He was paid 5½ francs.")
QUESTION = "Where did Chopin play?"


def window(tokenizer, context=CONTEXT, question=QUESTION):
    """The one window of a question about a short context."""
    [[w]] = windows.split(tokenizer, [question], [context], 512, 128)
    return w


def by_split(report_path):
    """A stage report (metrics/data.json, metrics/tokenize.json: a row per split) as {split: row}."""
    return {row["split"]: row for row in json.loads(Path(report_path).read_text())}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end to end through dvc or subprocesses (make test-slow; CI runs both tiers)")


T5_SMALL_TOKENIZER = Path(__file__).parent / "data" / "t5-small-tokenizer"  # t5-small's spiece.model (Apache-2.0)
T5_SMALL_VOCAB = 32_128  # t5-small's embedding rows: 28 more than its tokenizer's 32,100 ids


@pytest.fixture(scope="session")
def t5_tokenizer_dir():
    """t5-small's own tokenizer folder, as the Hub's holds it: T5Tokenizer adds the 100 <extra_id_*> tokens."""
    return T5_SMALL_TOKENIZER


@pytest.fixture(scope="session")
def t5_tokenizer():
    return T5Tokenizer.from_pretrained(T5_SMALL_TOKENIZER)


def squad_v1(*paragraphs):
    """SQuAD v1.1 JSON from (context, [(id, question, answer_text), ...]) pairs; spans found in the context."""
    articles = []
    for n, (context, qas) in enumerate(paragraphs):
        articles.append({"title": f"Article {n}", "paragraphs": [{"context": context, "qas": [
            {"id": qid, "question": q, "answers": [{"text": a, "answer_start": context.find(a)}]}
            for qid, q, a in qas]}]})
    return {"version": "1.1", "data": articles}


def squad_v2(context, answerable, unanswerable):
    """SQuAD v2.0 JSON of one paragraph: (id, question, answer) pairs, and (id, question) pairs marked
    is_impossible with no answers (plausible_answers as the official files have them)."""
    qas = [{"id": qid, "question": q, "is_impossible": False,
            "answers": [{"text": a, "answer_start": context.find(a)}]} for qid, q, a in answerable]
    qas += [{"id": qid, "question": q, "is_impossible": True, "answers": [],
             "plausible_answers": [{"text": context.split()[0], "answer_start": 0}]} for qid, q in unanswerable]
    return {"version": "v2.0", "data": [{"title": "Article", "paragraphs": [{"context": context, "qas": qas}]}]}


# token ids under 30: in every test model's vocabulary
_ids = torch.Generator().manual_seed(0)
BATCHES = [(torch.randint(3, 30, (b, n), generator=_ids), torch.randint(3, 30, (b, t), generator=_ids))
           for b, n, t in ((4, 9, 3), (3, 17, 5))]


def training_losses(model, autocast=False):
    """Losses of four AdamW steps on BATCHES, the second and fourth inputs padded (a real padding mask)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    result = []
    for ids, labels in BATCHES * 2:
        mask = torch.ones_like(ids)
        mask[1:, ids.shape[1] // 2:] = 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids * mask, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        result.append(loss.item())
    return result


@pytest.fixture
def write_json(tmp_path):
    def write(name, obj):
        path = tmp_path / name
        path.write_text(json.dumps(obj))
        return path
    return write


@pytest.fixture
def small_squad():
    return squad_v1(
        ("Ada Lovelace was born in London in 1815.", [("q1", "Where was Ada born?", "London"),
                                                       ("q2", "When was Ada born?", "1815")]),
        ("The Rhine flows through Basel.", [("q3", "What flows through Basel?", "The Rhine")]),
    )
