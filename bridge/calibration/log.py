"""A robot's drive read back from its MCAP recording: every control period's state and executed command.

Each period the robot-side runtime sends the command its actuators executed together with the
state it read (`CommandMsg.state`, bridge/robot/car/runtime.py), so a recording holds them on
`/bridge/out/command` (the robot's own recording) or `/bridge/in/command` (the policy side's,
or `shakedown bridge record`'s); the handshake's `hello` names the track and the control rate.
Calibration cuts the drive into segments of contiguous periods (`cut_segments`) and replays
each in the twin.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from agents.vlm.model_store import file_sha256
from bridge.recording import read_messages
from bridge.robot.car.runtime import STATE_FIELDS


class CalibrationError(ValueError):
    """A recording or request calibration cannot work with; the message says what to do."""


COMMAND_FIELDS = ("speed_cmd", "steer_cmd")
"""The executed command of a period, beside the STATE_FIELDS read before it."""
GAP_TOLERANCE = 0.25
"""Consecutive records further apart than (1 +- this) control periods are not contiguous (a link drop,
a restart): a segment never spans them."""


@dataclasses.dataclass(frozen=True)
class DriveLog:
    """One robot's drive: a record per control period, in time order."""

    recording: Path
    """The MCAP file it was read from."""
    sha256: str
    """Hash of the file's bytes (the calibrated config names the log it came from)."""
    robot: str
    """The robot's name from the handshake."""
    track: str
    """The map it drove on (a track the twin knows)."""
    control_hz: float
    """Rate of its control loop: one record per period."""
    columns: dict[str, np.ndarray]
    """STATE_FIELDS and COMMAND_FIELDS, one float array each, one entry per period."""
    modes: tuple[str, ...]
    """The runtime's mode each period ('waiting', 'running', 'safe-stop')."""
    recovered: bool = False
    """The file was torn (its writer was killed) and was read by a linear pass."""

    def __post_init__(self) -> None:
        lengths = {len(v) for v in self.columns.values()} | {len(self.modes)}
        if len(lengths) != 1:
            raise CalibrationError(f"DriveLog of {self.recording}: columns of different lengths {sorted(lengths)}")

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(self.modes)

    @property
    def period(self) -> float:
        return 1.0 / self.control_hz

    @property
    def duration_s(self) -> float:
        return float(self["t"][-1] - self["t"][0]) if len(self) else 0.0


def _messages(path: Path) -> tuple[list[tuple[str, dict]], bool]:
    """All messages, and whether the file had to be recovered (a killed writer leaves a torn file)."""
    try:
        return list(read_messages(path)), False
    except Exception as exc:  # mcap raises several types for a torn or foreign file; the linear pass decides
        messages = list(read_messages(path, recover=True))
        if not messages:
            raise CalibrationError(f"{path} is not a readable MCAP recording ({type(exc).__name__}: {exc}); pass the "
                                   "session.mcap a robot (or `shakedown bridge record`) wrote") from None
        return messages, True


def read_log(recording: Path | str) -> DriveLog:
    """The drive in `recording`; CalibrationError when the file is missing, unreadable, or holds no drive."""
    path = Path(recording)
    if not path.is_file():
        raise CalibrationError(f"no recording at {path}: pass the session.mcap of a robot's run folder "
                               "(the emulator writes runs/emulator/session.mcap)")
    messages, recovered = _messages(path)
    robots = {m["robot"]["name"]: m["robot"] for topic, m in messages if topic.endswith("/hello")}
    if len(robots) != 1:
        raise CalibrationError(f"{path} holds the handshakes of {len(robots)} robots ({sorted(robots)}); calibration "
                               "needs the recording of exactly one robot (its own session.mcap)")
    (name, robot), = robots.items()
    if robot.get("world") != "car":
        raise CalibrationError(f"{path} is a {robot.get('world')!r} session; calibration fits the car twin")
    records = [m for topic, m in messages if topic.endswith("/command") and m.get("state")]
    if not records:
        raise CalibrationError(f"{path} holds no command messages with the state read (recorded by an older "
                               "runtime, or the session never opened): record a session with this version")
    records.sort(key=lambda m: m["state"]["t"])
    columns = {f: np.array([m["state"][f] for m in records], float) for f in STATE_FIELDS}
    columns["speed_cmd"] = np.array([m["speed"] for m in records], float)
    columns["steer_cmd"] = np.array([m["steer"] for m in records], float)
    return DriveLog(path, file_sha256(path), name, robot["track"], float(robot["control_hz"]), columns,
                    tuple(m["mode"] for m in records), recovered)


@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of contiguous periods to replay: the state of record `start`, then `steps` commands."""

    start: int
    """Index of the record whose state starts the replay (the `history` records before it are contiguous)."""
    steps: int
    """Commands replayed; the replay is compared with records start+1 .. start+steps."""

    @property
    def stop(self) -> int:
        """Index of the segment's last record."""
        return self.start + self.steps


def cut_segments(log: DriveLog, segment_s: float, history: int) -> list[Segment]:
    """Disjoint segments of `segment_s`, each inside one contiguous run of records and preceded by
    `history` records of the same run (their commands fill the twin's actuation delay line)."""
    steps = max(1, round(segment_s * log.control_hz))
    dt = np.diff(log["t"])
    breaks = np.flatnonzero(np.abs(dt - log.period) > GAP_TOLERANCE * log.period) + 1
    segments = []
    for run in np.split(np.arange(len(log)), breaks):
        start = int(run[0]) + history if len(run) else 0
        while len(run) and start + steps <= run[-1]:
            segments.append(Segment(start, steps))
            start += steps + 1  # disjoint: a held-out segment shares no state with a fitted one
    return segments
