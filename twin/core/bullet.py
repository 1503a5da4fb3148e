"""One way to open a PyBullet simulation, for every scene in the twins."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

import pybullet as pb
from pybullet_utils import bullet_client

PHYSICS_HZ = 240.0
"""PyBullet's own default step rate, used by the factory scene (the car integrates its own
single-track model at `CarTwinConfig.physics_dt` and uses PyBullet only for contacts and sensing)."""


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence C-level stdout for a block (PyBullet prints 'argv[0]=' on every connect)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        # Flush C's buffer while it still points at /dev/null, or it would surface later.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def direct_client() -> bullet_client.BulletClient:
    """A headless (DIRECT) PyBullet client of its own, opened quietly."""
    with quiet_stdout():
        return bullet_client.BulletClient(connection_mode=pb.DIRECT)
