"""A robot's recorded drive as a scenario: a real-world surprise becomes a regression case.

    shakedown bridge scenario --recording runs/emulator/session.mcap --out runs/replay [--calibration calibration.yaml]

The scenario plays the robot's executed commands back in the twin from its recorded start
state (policy 'replay'; the commands are already shielded, so the scenario's shield is off),
on the same track at the same control rate, with the calibrated twin config when given, and
judges the drive with the usual monitors. It is a plain scenario file: `shakedown scenario
replay|export` and the regression corpus take it as they take any other. The bridge writes
the file and never imports the scenario engine (they are sibling layers).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import yaml

from bridge.calibration.log import CalibrationError, read_log
from twin.core.config import parse_config

MONITORS = {
    "no_crash": "always(crashed < 0.5)",
    "clearance": "always(clearance > 0.0)",
    "zone_speed": "always(speed <= zone_limit + 0.1)",
}
"""What a replayed drive is judged by unless the caller says otherwise."""


def recording_scenario(recording: Path | str, out: Path | str, calibration: Path | str | None = None,
                       name: str | None = None) -> Path:
    """Write `out/scenario.yaml` replaying the recorded drive; returns its path."""
    log = read_log(recording)
    running = [i for i, mode in enumerate(log.modes) if mode != "waiting"]
    if not running:
        raise CalibrationError(f"{recording}: the robot never drove (every period was 'waiting'); nothing to replay")
    first, last = running[0], running[-1]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = {k: round(float(log[k][first]), 9) for k in ("x", "y", "yaw", "v", "steer")}
    commands = [[round(float(a), 9), round(float(b), 9)] for a, b in
                zip(log["speed_cmd"][first:last + 1], log["steer_cmd"][first:last + 1])]
    world = {"kind": "car", "track": log.track, "duration_s": round(len(commands) / log.control_hz, 6),
             "control_hz": log.control_hz}
    if calibration is not None:
        world["params_file"] = str(Path(calibration).resolve())
    doc = {
        "name": name or f"replay-{log.robot}-{log.sha256[:8]}",
        "description": f"The drive recorded by {log.robot} in {Path(recording).name} (sha256 {log.sha256[:16]}), "
                       f"{len(commands)} periods from t = {float(log['t'][first]):.2f} s, played back in the twin.",
        "world": world,
        "system": {"policy": "replay", "shield": False, "replay": {"start": start, "commands": commands}},
        "monitors": dict(MONITORS),
    }
    path = out / "scenario.yaml"
    header = ("# A robot's recorded drive played back in the twin (shakedown bridge scenario).\n"
              "# Edit the monitors, or add nominal distributions and events to vary it.\n")
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=120, default_flow_style=None))
    return path


def replay_error(recording: Path | str, x: np.ndarray, y: np.ndarray) -> float:
    """Mean distance (m) between a replayed path and the recorded one (the same number of periods)."""
    log = read_log(recording)
    running = [i for i, mode in enumerate(log.modes) if mode != "waiting"]
    # Record k holds the state read before period k's command, so the replay's step k lands on record k + 1.
    xs, ys = log["x"][running[0] + 1:], log["y"][running[0] + 1:]
    n = min(len(xs), len(x))
    return float(np.mean(np.hypot(xs[:n] - x[:n], ys[:n] - y[:n])))


@dataclasses.dataclass(frozen=True)
class RecordingScenarioConfig:
    """Turn a robot's recording into a scenario that replays it in the twin."""

    recording: Path = Path("runs/emulator/session.mcap")
    """The robot's recording (session.mcap)."""
    out: Path = Path("runs/replay")
    """Folder for scenario.yaml."""
    calibration: Path | None = None
    """A calibrated twin config (shakedown calibrate) the replay should run on."""
    name: str = ""
    """The scenario's name (default: replay-<robot>-<recording hash>)."""


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    cfg = parse_config(RecordingScenarioConfig, argv, __doc__.split("\n\n")[0], prog)
    path = recording_scenario(cfg.recording, cfg.out, cfg.calibration, cfg.name or None)
    print(f"wrote {path}; run it: shakedown scenario run {path} -n 1 --backend inline")
