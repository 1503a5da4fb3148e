"""What each part of the demo hands back: its tables (printed and reported alike), its report
section, the detailed reports it wrote, the commands a reader can run to check it, and the
signed logs it kept (the audit part verifies, witnesses and indexes all of them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table as RichTable

from shakedown.report import HtmlReport


@dataclasses.dataclass(frozen=True)
class Table:
    """One table, the same on the console and in the report."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    @classmethod
    def of(cls, title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
        return cls(title, tuple(header), tuple(tuple(r) for r in rows))

    def rich(self) -> RichTable:
        table = RichTable(title=self.title)
        for i, col in enumerate(self.header):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in self.rows:
            table.add_row(*(_cell(v) for v in row))
        return table

    def report(self, report: HtmlReport) -> None:
        report.heading(self.title, 3)
        report.table(self.header, [[_cell(v) for v in row] for row in self.rows])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.3f}"
    return str(value)


@dataclasses.dataclass(frozen=True)
class SignedLog:
    """An audit log a part wrote, with the public key that verifies it."""

    what: str
    """What it records, in a few words."""
    path: Path
    public_key: Path


@dataclasses.dataclass
class Part:
    """One part of the demo, as it ran."""

    key: str
    """Its short name in results.json and --only ('drive', 'scenarios', 'robot', 'audit', 'line')."""
    title: str
    tables: list[Table]
    summary: dict[str, Any]
    """Its numbers, for results.json."""
    section: Callable[[HtmlReport], None] = lambda report: None
    """Adds what the part shows beyond its tables (text, figures) to the combined report."""
    links: list[tuple[str, Path]] = dataclasses.field(default_factory=list)
    """(label, path) of the detailed reports it wrote."""
    commands: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """(what it does, the exact command)."""
    logs: list[SignedLog] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    """Wall time the part took (the demo's runner sets it)."""
