"""The one error type the command line treats as the user's to fix.

Every exception a user can cause with bad input (a config field, a dataset record, a model name, a run
directory, a download) derives from :class:`UserError`. The CLI boundary (``seqedit.cli.main.main``) prints
such an error as one line naming the file, record and field, and exits with status 2; anything else is a bug
and keeps its traceback. ``--debug`` shows the traceback of user errors too.
"""

from __future__ import annotations

USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
    """Bad input: the message alone tells the user what to fix (file, record, field)."""


def one_line(message: str) -> str:
    """A multi-line message (e.g. one line per invalid field) joined into one line."""
    parts = [part.strip() for part in str(message).splitlines() if part.strip()]
    return "; ".join(parts) if parts else "(no message)"
