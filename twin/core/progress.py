"""Progress as a callback (the way SB3 passes a ProgressBarCallback): long jobs say how far
they are; the caller decides how that is shown. The command line supplies a rich bar
(shakedown.progress); a library caller gets `LogProgress`, plain lines on stderr with rate
and ETA, or passes `NullProgress` for silence. Jobs never import a display layer."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Protocol, TextIO, runtime_checkable


@runtime_checkable
class Progress(Protocol):
    """Told what a job is doing and how far it got."""

    def start(self, description: str, total: int, completed: int = 0) -> None:
        """A new stage of work with `total` steps, `completed` of them already done (resuming)."""

    def advance(self, steps: int = 1, note: str = "") -> None:
        """`steps` more done; `note` is a short live figure, e.g. 'loss 0.412'."""

    def set_completed(self, completed: int, note: str = "") -> None:
        """Absolute position, for jobs that count in other units (SB3 timesteps)."""

    def finish(self) -> None:
        """The stage is over (also called after an error)."""


class NullProgress:
    """Shows nothing."""

    def start(self, description: str, total: int, completed: int = 0) -> None:
        pass

    def advance(self, steps: int = 1, note: str = "") -> None:
        pass

    def set_completed(self, completed: int, note: str = "") -> None:
        pass

    def finish(self) -> None:
        pass


class LogProgress:
    """A line at most every `every_s` seconds: description, count, rate and ETA."""

    def __init__(self, every_s: float = 10.0, stream: TextIO | None = None) -> None:
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self.description, self.total, self.completed, self.note = "", 0, 0, ""
        self._t0 = self._last = 0.0
        self._done_at_start = 0

    def start(self, description: str, total: int, completed: int = 0) -> None:
        self.description, self.total, self.completed, self.note = description, total, completed, ""
        self._t0 = self._last = time.monotonic()
        self._done_at_start = completed

    def advance(self, steps: int = 1, note: str = "") -> None:
        self.set_completed(self.completed + steps, note)

    def set_completed(self, completed: int, note: str = "") -> None:
        self.completed = completed
        self.note = note or self.note
        now = time.monotonic()
        if now - self._last >= self.every_s or self.completed >= self.total:
            self._last = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        """'GRPO car 12/150 (0.31/s, ETA 7m25s) reward +0.12'"""
        done = self.completed - self._done_at_start
        rate = done / max(now - self._t0, 1e-9)
        eta = (self.total - self.completed) / rate if rate > 0 else float("inf")
        eta_text = f"{int(eta // 60)}m{int(eta % 60):02d}s" if eta != float("inf") else "--"
        return f"{self.description} {self.completed}/{self.total} ({rate:.2f}/s, ETA {eta_text}) {self.note}".rstrip()

    def finish(self) -> None:
        pass


@contextlib.contextmanager
def progress_stage(progress: Progress | None, description: str, total: int,
                   completed: int = 0) -> Iterator[Progress]:
    """`with progress_stage(progress, 'SFT car', steps) as bar: ... bar.advance(note=...)`;
    None means `LogProgress()`, so a job run from Python still shows rate and ETA."""
    shown = progress if progress is not None else LogProgress()
    shown.start(description, total, completed)
    try:
        yield shown
    finally:
        shown.finish()
