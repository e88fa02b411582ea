"""What every `python -m` command of the project shares: bad input (a missing, empty or unwritable path, a
bad config) ends the command with one line on stderr, `error: …` naming the problem, and exit status 2 —
never a traceback. Commands check their paths first (`need_file`, `need_dir`, `need_writable`), before any
slow work, and their `__main__` blocks run `sys.exit(run_cli(main))`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

BAD_INPUT = 2  # the exit status of every command given bad input


class InputError(ValueError):
    """Bad command-line input: the message names the argument, the path and what is wrong with it."""


def fail(message: object) -> int:
    """Print `error: message` (its first line only when it has several, the rest indented) and return 2."""
    lines = str(message).strip().splitlines() or [type(message).__name__]
    print("error: " + "\n  ".join(lines), file=sys.stderr)
    return BAD_INPUT


def _need(path: str | None, what: str, is_kind, wrong_kind: str, kind: str) -> str:
    """`path` if given, existing and of the kind `is_kind` tests; else InputError naming `what` and the path."""
    if not path:
        raise InputError(f"{what}: no path given")
    if not os.path.exists(path):
        raise InputError(f"{what} {path} does not exist")
    if not is_kind(path):
        raise InputError(f"{what} {path} is a {wrong_kind}, expected a {kind}")
    return path


def need_file(path: str | None, what: str) -> str:
    """`path` if it is an existing, non-empty file; else InputError naming `what` and the path."""
    _need(path, what, os.path.isfile, "directory", "file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{what} {path} is empty")
    return path


def need_dir(path: str | None, what: str, containing: Sequence[str] = ()) -> str:
    """`path` if it is a directory holding at least one of `containing` (any file if that is empty); else
    InputError naming `what`, the path and what is missing."""
    _need(path, what, os.path.isdir, "file", "directory")
    if containing and not any(os.path.exists(os.path.join(path, name)) for name in containing):
        raise InputError(f"{what} {path} has no {' or '.join(containing)}")
    if not containing and not os.listdir(path):
        raise InputError(f"{what} {path} is empty")
    return path


def need_writable(path: str | None, what: str) -> str:
    """`path` if it can be created: its nearest existing ancestor is a writable directory; else InputError.
    Nothing is created."""
    if not path:
        raise InputError(f"{what}: no path given")
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise InputError(f"{what} {path} cannot be written: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK):
        raise InputError(f"{what} {path} cannot be written: {ancestor} is not writable")
    return path


def run_cli(main: Callable[..., int | None], argv: list[str] | None = None,
            errors: tuple[type[BaseException], ...] = ()) -> int:  # fmt: skip
    """`main(argv)`'s exit status (None counts as 0), with `InputError`, `OSError` (a path the command could
    not read or write) and `errors` turned into one `error: …` line and status 2."""
    try:
        status = main(argv) if argv is not None else main()
    except (InputError, OSError, *errors) as e:
        return fail(e)
    return 0 if status is None else int(status)
