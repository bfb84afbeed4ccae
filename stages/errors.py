"""One kind of error for input the user can fix, and the wrapper that reports it."""

import functools
import signal
import subprocess
import sys

INTERRUPTED = 130  # the shell's status for a process stopped by Ctrl-C


class InputError(Exception):
    """Bad data, params or paths: reported as one line naming what to fix, exit status 1."""


def cli(main=None, *, outputs=()):
    """Run a stage's main(), its output in UTF-8; an InputError becomes `error: ...` on stderr and exit 1,
    Ctrl-C or SIGTERM (a pre-empted machine) one line `interrupted: ...` and exit 130, neither with a
    traceback. A stage says what an interruption left by raising KeyboardInterrupt with that as its message.
    `outputs`: the stage's git-tracked outputs, put back from git when it fails (restore). Use as @cli or
    @cli(outputs=[...])."""
    if main is None:
        return functools.partial(cli, outputs=outputs)

    @functools.wraps(main)
    def run(*args, **kwargs):
        signal.signal(signal.SIGTERM, stop)
        sys.stdout.reconfigure(encoding="utf-8")  # answers and ids in any script, whatever the locale
        try:
            return main(*args, **kwargs)
        except InputError as e:
            restore(outputs)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt as e:
            restore(outputs)
            # on a line of its own: a progress bar may have been cut off mid-line
            print(f"\ninterrupted: {str(e) or 'stopped before it finished; its outputs are as they were'}",
                  file=sys.stderr)
            sys.exit(INTERRUPTED)

    return run


def restore(outputs):
    """Put back from git (its index: what the user last staged or committed) the outputs that git tracks and
    that are gone: `dvc repro` removes a stage's outputs before running it (none is `persist`, so that DVC's
    run-cache can restore them), and a failed or interrupted run must leave `git status` as the user left it.
    Outside a git checkout there is nothing to put back."""
    if not outputs:
        return
    try:
        gone = subprocess.run(["git", "ls-files", "--deleted", "-z", "--", *map(str, outputs)], capture_output=True,
                              text=True, check=True).stdout.split("\0")
        if any(gone):
            subprocess.run(["git", "checkout", "--", *filter(None, gone)], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pass


def stop(signum, frame):
    raise KeyboardInterrupt
