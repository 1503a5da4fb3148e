"""Toy episode functions for the campaign runner's tests, module-level so that spawned pool workers and
Ray workers can import them. Payloads are dicts with an int "x"; the other keys switch behaviours on."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def toy(payload: dict) -> dict:
    """Deterministic in x; sleeps payload["sleep"] seconds first, so items can finish out of order."""
    time.sleep(payload.get("sleep", 0.0))
    x = payload["x"]
    return {"x": x, "square": x * x, "failed": x % 3 == 0}


def noop(payload: object) -> dict:
    """Nothing at all: measures the runner's own overhead per item."""
    return {}


def raising(payload: dict) -> dict:
    """Raises ValueError for items marked "bad"."""
    if payload.get("bad"):
        raise ValueError(f"bad item {payload['x']}")
    return toy(payload)


def crashing(payload: dict) -> dict:
    """Kills its own process for items marked "crash": "exit" (os._exit) or "kill" (SIGKILL)."""
    if payload.get("crash") == "exit":
        os._exit(1)
    if payload.get("crash") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return toy(payload)


def counted(payload: dict) -> dict:
    """Appends a line to the file payload["log"] per call (O_APPEND: safe across processes), then runs toy."""
    with Path(payload["log"]).open("a") as log:
        log.write(f"{payload['x']}\n")
    return toy(payload)
