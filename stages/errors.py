"""One kind of error for input the user can fix, and the wrapper that reports it."""

import functools
import signal
import sys

INTERRUPTED = 130  # the shell's status for a process stopped by Ctrl-C


class InputError(Exception):
    """Bad data, params or paths: reported as one line naming what to fix, exit status 1."""


def cli(main):
    """Run a stage's main(), its output in UTF-8; an InputError becomes `error: ...` on stderr and exit 1,
    Ctrl-C or SIGTERM (a pre-empted machine) one line `interrupted: ...` and exit 130, neither with a
    traceback. A stage says what an interruption left by raising KeyboardInterrupt with that as its message."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        signal.signal(signal.SIGTERM, stop)
        sys.stdout.reconfigure(encoding="utf-8")  # answers and ids in any script, whatever the locale
        try:
            return main(*args, **kwargs)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt as e:
            # on a line of its own: a progress bar may have been cut off mid-line
            print(f"\ninterrupted: {e or 'stopped before it finished; its outputs are as they were'}",
                  file=sys.stderr)
            sys.exit(INTERRUPTED)

    return run


def stop(signum, frame):
    raise KeyboardInterrupt
