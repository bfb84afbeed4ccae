"""Stage 1: load the train / validation / test splits, check every record, write flat splits.

Reads params data.* (and seed, for data.shuffle); writes data/prepared/<split>.jsonl and the data report metrics/data.json.
"""

from collections import Counter
from pathlib import Path

from stages import params, squad
from stages.errors import InputError, cli
from stages.outputs import staged, write_json

OUT = Path("data/prepared")
REPORT = Path("metrics/data.json")
SHOWN_PROBLEMS = 3


@cli
def main():
    p = params.load()
    data = p["data"]
    shuffle_seed = p["seed"] if data["shuffle"] else None
    report = {"rows": {}, "unanswerable": {}, "dropped": {}, "dropped_because": Counter()}
    loaded = {split: squad.load_split(data["source"], data["splits"][split], shuffle_seed) for split in squad.SPLITS}
    squad.check_disjoint({f"data.splits.{split}": (origin, rows_range)
                          for split, (_, origin, rows_range) in loaded.items()})
    prepared = {}
    for split, (rows, origin, _) in loaded.items():
        bad, seen = {}, set()  # row index -> (id, why); evaluate joins predictions by id: ids must be unique
        for i, row in enumerate(rows):
            why = squad.problem(row) or ("id: used by an earlier record too" if row["id"] in seen else None)
            if why:
                bad[i] = (row["id"], why)
            else:
                seen.add(row["id"])
        if bad and data["on_invalid"] == "error":
            shown = "; ".join(f"id {rid!r}: {why}" for rid, why in list(bad.values())[:SHOWN_PROBLEMS])
            raise InputError(f"{origin}: {len(bad)} invalid record(s) in split {split} ({shown}"
                             f"{'; ...' if len(bad) > SHOWN_PROBLEMS else ''}); fix them, "
                             "or set data.on_invalid: drop to skip them")
        if bad:
            rows = rows.select([i for i in range(len(rows)) if i not in bad])
            report["dropped_because"].update(why.split(":")[0] for _, why in bad.values())
        if len(rows) == 0:
            raise InputError(f"{origin}: split {split} ({data['splits'][split]}) has no usable records")
        prepared[split] = rows
        report["rows"][split] = len(rows)
        report["unanswerable"][split] = sum(not answers["text"] for answers in rows["answers"])  # SQuAD v2.0
        report["dropped"][split] = len(bad)
        print(f"{split}: {len(rows)} rows from {origin} {data['splits'][split]} "
              f"({report['unanswerable'][split]} unanswerable), {len(bad)} dropped")

    with staged(OUT) as tmp:
        tmp.mkdir()
        for split, rows in prepared.items():
            rows.to_json(tmp / f"{split}.jsonl", lines=True, force_ascii=False)
    report["dropped_because"] = dict(report["dropped_because"])
    write_json(REPORT, report)


if __name__ == "__main__":
    main()
