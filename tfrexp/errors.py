"""Errors a user can act on, and the one way a command ends on one: `<command>: error: <message>`, exit 2."""

from __future__ import annotations

import sys
from typing import NoReturn


class TfrexpError(Exception):
    """Base of the errors whose message alone tells the user what to fix."""


class ConfigError(TfrexpError, ValueError):
    """A config value that cannot work; the message names the key and the value."""


class DataError(TfrexpError):
    """Source data that is missing, malformed or does not match what the config promises."""


class RecordsError(TfrexpError):
    """TFRecords that are missing, corrupt or disagree with their manifest."""


class TrainingDiverged(TfrexpError):
    """The loss became NaN or infinite."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (a library's may go on for pages), or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def exit_with_error(message: object, command: str = "tfrexp") -> NoReturn:
    """End a command with its error as one line on stderr (no traceback) and exit status 2."""
    print(f"{command}: error: {message}", file=sys.stderr)
    sys.exit(2)
