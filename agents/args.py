"""Command-line flags from a frozen args dataclass (one flag per field, CleanRL style)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Sequence

_CASTERS = {"int": int, "float": float, "Path": Path, "str": str}


def parse_args(cls: type, argv: Sequence[str] | None, description: str) -> Any:
    parser = argparse.ArgumentParser(description=description)
    for f in dataclasses.fields(cls):
        flag = f"--{f.name.replace('_', '-')}"
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            parser.add_argument(flag, type=_CASTERS.get(f.type, str), default=f.default)
    return cls(**vars(parser.parse_args(argv)))
