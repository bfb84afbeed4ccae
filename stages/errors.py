"""One kind of error for input the user can fix, and the wrapper that reports it."""

import functools
import sys


class InputError(Exception):
    """Bad data, params or paths: reported as one line naming what to fix, exit status 1."""


def cli(main):
    """Run a stage's main(); an InputError becomes `error: ...` on stderr and exit 1, no traceback."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    return run
