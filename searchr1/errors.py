"""User errors: a mistake the user can fix ends in a few lines saying what and how, not in a traceback.

Every console command runs through :func:`run_command`. An exception of a *user* kind (a bad option or value, a bad
data line, a missing file, a setup that cannot run on this machine: see :func:`user_message`) is printed as at most
:data:`MAX_LINES` lines on stderr starting ``searchr1: error:`` and exits with status 2; anything else is a bug and
keeps its traceback. ``SEARCHR1_DEBUG=1`` re-raises user errors too, with their traceback.

jsonargparse reports a failing class constructor as "Does not validate against any of the Union subtypes" with the
real message buried in its ``Errors:`` list; :func:`user_message` digs it out. Ctrl-C ends in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

DEBUG_ENV = "SEARCHR1_DEBUG"
MAX_LINES = 5
MAX_LINE_CHARS = 400
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(ValueError):
    """A mistake the user can fix (an option, a file, a data line, the hardware); the message says what and how."""


def debug_enabled() -> bool:
    """Whether ``SEARCHR1_DEBUG`` asks for tracebacks of user errors."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


class ShortArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one :func:`format_error` line (exit 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        if debug_enabled():
            super().error(message)
        fail(f"{message} (`{self.prog} --help` lists the options)")


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Around building the objects of a parsed config: a ``ValueError``/``TypeError`` a constructor raises is a
    wrong config, not a bug (constructor arguments are the configuration), so it becomes a :class:`UserError`
    with the real message (dug out of jsonargparse's Union report)."""
    try:
        yield
    except (ValueError, TypeError) as err:
        if isinstance(err, _user_error_types()) or debug_enabled():  # already says what to fix (SetupError...)
            raise
        raise UserError(_union_errors(str(err)) or str(err)) from err


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError]
    types += [PermissionError, FileExistsError, json.JSONDecodeError, argparse.ArgumentError]
    for module, name in (
        ("searchr1.training.scaling", "SetupError"),
        ("searchr1.data.qa", "DataError"),
        ("searchr1.retrieval.corpus", "CorpusFormatError"),
        ("searchr1.retrieval.manifest", "IndexMismatchError"),
        ("searchr1.training.sharded_checkpoint", "IncompleteCheckpointError"),  # names the newest complete one
        ("jsonargparse", "ArgumentError"),
        ("lightning.fabric.utilities.exceptions", "MisconfigurationException"),  # Lightning's word for a bad value
    ):
        loaded = sys.modules.get(module)  # only what the command imported can have raised it
        if loaded is not None and hasattr(loaded, name):
            types.append(getattr(loaded, name))
    return tuple(types)


def _union_errors(message: str) -> str | None:
    """The real error inside jsonargparse's "Does not validate against any of the Union subtypes" report."""
    if "Union subtypes" not in message or "Errors:" not in message:
        return None
    errors = message.split("Errors:", 1)[1].split("Given value", 1)[0]
    items = [line.strip()[2:].strip() for line in errors.splitlines() if line.strip().startswith("- ")]
    real = [i for i in items if not i.startswith("Expected a <class 'NoneType'>")]
    return "; ".join(real) if real else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):  # str() keeps the position the message alone lacks
        return f"not valid JSON: {exc}"
    if isinstance(exc, OSError) and exc.filename and exc.strerror:  # an errno error: name the file and the fix
        fix = "check its permissions" if isinstance(exc, PermissionError) else "check the path"
        return f"{exc.strerror}: {exc.filename} ({fix})"
    return str(exc) or type(exc).__name__


def user_message(exc: BaseException) -> str | None:
    """The message to show for ``exc`` when it is a user error (see module docstring), else None (a bug)."""
    if isinstance(exc, _user_error_types()):
        return _describe(exc)
    if isinstance(exc, OSError) and "huggingface.co" in str(exc):  # a name that is no folder here, and no hub
        first = str(exc).strip().splitlines()[0]
        return (
            f"{first}\na model name that is no local folder is looked up on the Hugging Face hub: give an existing "
            "folder (with config.json), a hub name cached here, or tiny:micro for an offline tiny model"
        )
    if isinstance(exc, ValueError):
        return _union_errors(str(exc))  # a constructor's error, wrapped by jsonargparse while building the config
    return None


def format_error(message: str, hint: str | None = None) -> str:
    """At most :data:`MAX_LINES` lines, the first starting ``searchr1: error:``, each cut to a readable length."""
    lines = [line.rstrip() for line in message.strip().splitlines() if line.strip()] or ["(no message)"]
    lines = [line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 3] + "..." for line in lines]
    room = MAX_LINES - (1 if hint else 0)
    if len(lines) > room:
        lines = [*lines[: room - 1], f"... ({len(lines) - room + 1} more lines: {DEBUG_ENV}=1 shows everything)"]
    lines[0] = f"searchr1: error: {lines[0]}"
    if hint:
        lines.append(hint)
    return "\n".join(lines) + "\n"


def fail(message: str, hint: str | None = None, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print :func:`format_error` on stderr and exit with ``code``."""
    sys.stdout.flush()
    sys.stderr.write(format_error(message, hint))
    sys.stderr.flush()
    raise SystemExit(code)


def run_command(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)``; a user error ends in a short message (exit 2), Ctrl-C in one line (exit 130).

    (A ``fit`` interrupted by Ctrl-C is reported by Lightning's handler and
    :class:`searchr1.training.console.InterruptReport`, which names the last checkpoint.)
    """
    try:
        return fn(*args)
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        fail("interrupted (Ctrl-C)", code=EXIT_INTERRUPTED)
    except (SystemExit, GeneratorExit):
        raise
    except Exception as exc:
        message = None if debug_enabled() else user_message(exc)
        if message is None:
            raise
        fail(message, hint=f"({DEBUG_ENV}=1 shows the traceback)")
