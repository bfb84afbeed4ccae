"""Stage 1: load the train / validation / test splits, check every record, write flat splits.

Reads params data.* (and seed, for data.shuffle); writes data/prepared/<split>.jsonl and the data report
metrics/data.json (a row per split: source, rows, unanswerable, dropped and why).
"""

import functools
from collections import Counter
from pathlib import Path

from stages import params, squad
from stages.errors import InputError, cli
from stages.outputs import staged, write_json

OUT = Path("data/prepared")
REPORT = Path("metrics/data.json")


@cli(outputs=[REPORT])
def main():
    p = params.load()
    data = p["data"]
    shuffle_seed = p["seed"] if data["shuffle"] else None
    report = []  # a row per split: a bar chart in `dvc plots show`
    read = functools.cache(squad.read_file)  # the seed's train and validation splits are slices of one file
    loaded = {split: squad.load_split(data["source"], data["splits"][split], shuffle_seed, read,
                                      param=f"data.splits.{split}") for split in squad.SPLITS}
    squad.check_disjoint({f"data.splits.{split}": (origin, rows_range)
                          for split, (_, origin, rows_range) in loaded.items()})
    prepared = {}
    for split, (rows, origin, _) in loaded.items():
        bad, seen = {}, set()  # row index -> (id, Problem); evaluate joins predictions by id: ids must be unique
        columns = rows.select_columns(["id", "problem", "answers"]).to_dict()  # lists: a Column reads row by row
        for i, (rid, found) in enumerate(zip(columns["id"], columns["problem"])):
            why = squad.Problem(**found) if found else squad.Problem("id", "used by an earlier record too") \
                if rid in seen else None
            if why:
                bad[i] = (rid, why)
            else:
                seen.add(rid)
        if bad and data["on_invalid"] == "error":
            (i, (rid, why)), more = next(iter(bad.items())), len(bad) - 1
            where = squad.record_name(rid, f"{i + 1} of {data['splits'][split]}")
            raise InputError(f"{origin}: {where}: {why}"
                             f"{f' ({more} more invalid records in split {split})' if more else ''}; fix it, "
                             "or set data.on_invalid: drop to skip invalid records")
        kept = [i for i in range(len(rows)) if i not in bad]
        if bad:
            rows = rows.select(kept)
        rows = rows.remove_columns("problem")
        if len(rows) == 0:
            raise InputError(f"{origin}: split {split} ({data['splits'][split]}) has no usable records")
        prepared[split] = rows
        report.append({"split": split, "source": origin, "slice": data["splits"][split], "rows": len(rows),
                       "unanswerable": sum(not columns["answers"][i]["text"] for i in kept),  # SQuAD v2.0
                       "dropped": len(bad), "dropped_because": dict(Counter(why.field for _, why in bad.values()))})
        print(f"{split}: {len(rows)} rows from {origin} {data['splits'][split]} "
              f"({report[-1]['unanswerable']} unanswerable), {len(bad)} dropped")

    with staged(OUT) as tmp:
        tmp.mkdir()
        for split, rows in prepared.items():
            rows.to_json(tmp / f"{split}.jsonl", lines=True, force_ascii=False)
    write_json(REPORT, report)


if __name__ == "__main__":
    main()
