"""The one exception type for a user's mistake (`lightwork.errors`).

The library raises `UserError` for what the person at the keyboard can fix (a bad `--set` value or
key, a missing file or folder, an unknown preset, a model that does not fit the data, a re-run
with other settings). Every job (`lightwork.jobs.entry.run_job`) prints its message as
one line on stderr and exits with status 2; `LIGHTWORK_DEBUG=1` shows the traceback instead.
It subclasses ValueError, so callers that already catch ValueError keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the input: its message is one line that says what is wrong and what is allowed."""


def failure_message(error: Exception, where: str, file: str | None = None) -> str:
    """What a failed case's record says: a ValueError's own message (the library's errors name the
    file and the problem), prefixed with `where` when it does not name `file`; anything else (an
    unexpected error) prefixed with `where` and its type."""
    if not isinstance(error, ValueError):
        return f"{where}: {type(error).__name__}: {error}"
    message = str(error)
    return message if file is None or file in message else f"{where}: {message}"
