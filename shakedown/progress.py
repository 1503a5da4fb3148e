"""The command line's progress display: a rich bar (description, bar, count, rate, ETA) that
implements the `twin.core.progress.Progress` callback the jobs report to."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second (rich's own speed column is for bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f}/s" if speed else "--/s")


def progress_bar() -> Progress:
    """A rich Progress for jobs of this layer that drive a bar themselves (the demos)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                    TextColumn("ETA"), TimeRemainingColumn())


class RichProgress:
    """`Progress` callback shown as a rich bar; one bar per stage, live until `finish`."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._description = ""

    def start(self, description: str, total: int, completed: int = 0) -> None:
        self.finish()
        self._bar = progress_bar()
        self._bar.start()
        self._description = description
        self._task = self._bar.add_task(description, total=total, completed=completed)

    def advance(self, steps: int = 1, note: str = "") -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=steps, description=f"{self._description} {note}".rstrip())

    def set_completed(self, completed: int, note: str = "") -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=completed, description=f"{self._description} {note}".rstrip())

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar, self._task = None, None
