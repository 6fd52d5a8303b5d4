"""Progress displays: one per phase, silenced by ``--quiet``.

``SEQEDIT_PROGRESS=0`` (set by the CLI's ``--quiet``) turns every seqedit progress bar off. While an outer
display is live (the editing bar of a run), inner work such as key statistics shows no bar of its own:
it reports what it is doing through :func:`note`, which the outer display shows in its status column.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

PROGRESS_ENV = "SEQEDIT_PROGRESS"

_outer_note: ContextVar[Callable[[str], None] | None] = ContextVar("seqedit_outer_progress", default=None)


def progress_allowed(requested: bool = True) -> bool:
    """Whether a new progress bar may be shown: requested, not silenced, and no outer display live."""
    silenced = os.environ.get(PROGRESS_ENV, "").strip().lower() in {"0", "false", "no", "off"}
    return requested and not silenced and _outer_note.get() is None


@contextmanager
def outer_display(show_note: Callable[[str], None]) -> Iterator[None]:
    """Mark a live display; inner work reports through :func:`note` instead of drawing its own bar."""
    token = _outer_note.set(show_note)
    try:
        yield
    finally:
        _outer_note.reset(token)


def note(text: str) -> None:
    """Tell the live outer display (if any) what is happening now."""
    show = _outer_note.get()
    if show is not None:
        show(text)
