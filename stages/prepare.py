"""Stage 1: load the train / validation / test splits, check every record, write flat splits.

Reads params data.*; writes data/prepared/<split>.jsonl and the data report metrics/data.json.
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
    data = params.load()["data"]
    report = {"rows": {}, "dropped": {}, "dropped_because": Counter()}
    prepared = {}
    for split in squad.SPLITS:
        rows, origin = squad.load_split(data["source"], data["splits"][split])
        bad = [(row["id"], why) for row in rows if (why := squad.problem(row))]
        if bad and data["on_invalid"] == "error":
            shown = "; ".join(f"id {rid!r}: {why}" for rid, why in bad[:SHOWN_PROBLEMS])
            raise InputError(f"{origin}: {len(bad)} invalid record(s) in split {split} ({shown}"
                             f"{'; ...' if len(bad) > SHOWN_PROBLEMS else ''}); fix them, "
                             "or set data.on_invalid: drop to skip them")
        if bad:
            bad_ids = {rid for rid, _ in bad}
            rows = rows.filter(lambda row: row["id"] not in bad_ids, desc=f"dropping invalid {split} rows")
            report["dropped_because"].update(why.split(":")[0] for _, why in bad)
        if len(rows) == 0:
            raise InputError(f"{origin}: split {split} ({data['splits'][split]}) has no usable records")
        prepared[split] = rows
        report["rows"][split] = len(rows)
        report["dropped"][split] = len(bad)
        print(f"{split}: {len(rows)} rows from {origin} {data['splits'][split]}, {len(bad)} dropped")

    with staged(OUT) as tmp:
        tmp.mkdir()
        for split, rows in prepared.items():
            rows.to_json(tmp / f"{split}.jsonl", lines=True, force_ascii=False)
    report["dropped_because"] = dict(report["dropped_because"])
    write_json(REPORT, report)


if __name__ == "__main__":
    main()
