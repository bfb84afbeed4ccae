"""Push the workspace's data, DVC's run-cache and the outputs of every run it remembers, so that another
clone's `dvc repro --pull` restores any configuration run here instead of training it again.

    python -m stages.share            # the default remote; -r NAME for another

`dvc push` sends the run records but only the current revision's outputs (DVC 3.67; its maintainers:
push "doesn't push anything except the runs files" for the run-cache), and never the git-tracked outputs
(`cache: false`) that a run record needs restored: another clone found the record and trained anyway.
"""

import argparse
from pathlib import Path

from dvc.repo import Repo

from stages.errors import InputError, cli


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--remote", help="DVC remote (default: the default remote)")
    args = parser.parse_args(argv)
    try:
        repo = Repo()
    except Exception as e:  # noqa: BLE001 -- DVC's NotDvcRepoError and kin
        raise InputError(f"{Path.cwd()}: not a DVC project ({e}); run this from the repository root") from None
    with repo:
        repo.push(remote=args.remote, run_cache=True)  # the workspace's data and the run records
        runs = Path(repo.cache.legacy.path) / "runs"  # runs/<prefix>/<stage key>/<run>
        records = [(path.parent.name, path.name) for path in runs.glob("*/*/*")]
        sent = failed = 0
        for odb, objects in repo.stage_cache.get_used_objs(records).items():
            result = repo.cloud.push(objects, remote=args.remote, odb=odb)
            sent, failed = sent + len(result.transferred), failed + len(result.failed)
    if failed:
        raise InputError(f"{failed} outputs of remembered runs could not be pushed; run `dvc push -v` to see why")
    print(f"pushed the workspace, {len(records)} run records and {sent} more of their outputs")


if __name__ == "__main__":
    main()
