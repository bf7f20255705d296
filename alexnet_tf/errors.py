"""The errors a user can fix, and the exit status of each: one model for every entry point.

A `UserError` is printed as its one-line message, never as a traceback. Each subclass adds its own
prefix ("config error: ", "error: ") to the message it is given, so a raise site writes only what was
wrong and what was expected. `exit_status(exc)` is the one map from an exception to the process's exit
status; `report(exc)` prints the line and returns that status. Anything else is a bug: it propagates.

This module imports nothing of the package or of TensorFlow: every module may raise these, including
the config loader that runs before TensorFlow starts.
"""

import sys

# Exit statuses, as `python train.py` documents them.
FAILED = 1         # the work stopped: missing data, a divergence, an unreadable checkpoint, a full disk
USAGE = 2          # a config or command-line value was refused before any heavy work (argparse uses 2 too)
PEER_LOST = 75     # multi_worker: a peer process was lost (EX_TEMPFAIL: rerun the same command)


class UserError(Exception):
    """Something the user can fix; the message is one line: what was wrong and what was expected."""

    prefix = "error: "
    status = FAILED

    def __init__(self, message=""):
        self.detail = message  # without the prefix: for a message that adds to another error's
        super().__init__(self.prefix + message)


class ConfigError(UserError, ValueError):
    """A config value (or a flag, or the environment a config needs) is unknown, of the wrong type or out
    of range; found before any heavy work starts. A ValueError too, as it always was."""

    prefix = "config error: "
    status = USAGE


def shown(value, limit=200):
    """A value as a one-line message quotes it: repr, cut to `limit` characters (a value can be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PathExists(UserError, FileExistsError):
    """A file or directory the command would create exists already; the message says how to proceed."""


def exit_status(exc):
    """The exit status for `exc`: its own for a UserError (and 128 + n for a run stopped by signal n,
    which carries `status`), None for anything else (a bug: let it raise)."""
    if isinstance(exc, UserError):
        return exc.status
    return None


def report(exc, file=None):
    """Print a UserError's one line on stderr and return its exit status; re-raise anything else."""
    status = exit_status(exc)
    if status is None:
        raise exc
    print(exc, file=file or sys.stderr, flush=True)
    return status
