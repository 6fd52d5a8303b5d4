"""A progress bar for sequential edits: edits done, edits per second, ETA, and what is happening now."""

from __future__ import annotations

from contextlib import ExitStack
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from seqedit.utils.progress import outer_display, progress_allowed


class StepProgress:
    def __init__(self, total_edits: int, done: int = 0, *, enabled: bool = True, label: str = "editing") -> None:
        self.enabled = progress_allowed(enabled)
        self._scope = ExitStack()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("edits"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            disable=not self.enabled,
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total_edits, completed=done, rate="", note="")
        self._done_at_start = done

    def __enter__(self) -> StepProgress:
        self._progress.start()
        if self.enabled:  # inner work (key statistics) shows its status in this bar's note column
            self._scope.enter_context(outer_display(self.note))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._scope.close()
        self._progress.stop()

    def advance(self, edits: int) -> None:
        self._progress.update(self._task, advance=edits, note="")
        task = self._progress.tasks[0]
        elapsed = task.elapsed or 0.0
        done = task.completed - self._done_at_start
        if elapsed > 0 and done > 0:
            self._progress.update(self._task, rate=f"{done / elapsed:.2f} edits/s")

    def note(self, text: str) -> None:
        self._progress.update(self._task, note=text)
