"""The calibrated twin config: a YAML file of the twin's parameters by randomization path.

    params: {vehicle.mu: 0.8916, actuation.motor_gain: 0.8, ...}     # what a twin built from it uses
    uncertainty: {vehicle.mu: 0.032, ...}                            # standard errors
    unidentifiable: {vehicle.mass: "why"}                            # left at the nominal
    heldout: {ade_before_m: ..., ade_after_m: ..., ...}
    recording: {path: ..., sha256: ..., track: ..., ...}

`calibrated_params` builds `CarParams` from it (each value checked by the twin's own bounds), so
`CarTwinConfig(params=calibrated_params(path))` is the calibrated twin. `emulator_truth` reads the
gap an emulator declared (trace.json beside its recording), for reports and tests only:
calibration itself never looks at it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bridge.calibration.fit import DEFAULT_PARAMS, Calibration
from bridge.calibration.log import CalibrationError
from bridge.calibration.replay import BIAS
from bridge.robot.car.emulator import RealityGap
from twin.car.twin import CarParams
from twin.core.config import ConfigError, get_path, replace_path


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def calibration_config(cal: Calibration) -> dict[str, Any]:
    """The calibrated twin config of `cal`, as plain data."""
    return {
        "params": {e.path: float(e.value) for e in cal.estimates if e.identified},
        "uncertainty": {e.path: _round(e.std) for e in cal.estimates if e.identified},
        "unidentifiable": cal.unidentifiable,
        "nominal": {e.path: e.nominal for e in cal.estimates},
        "heldout": {"segments": len(cal.heldout), "ade_before_m": _round(cal.ade_before),
                    "ade_after_m": _round(cal.ade_after), "fde_before_m": _round(cal.fde_before),
                    "fde_after_m": _round(cal.fde_after), "ade_reduction": _round(cal.ade_reduction)},
        "recording": {"path": str(cal.recording), "sha256": cal.sha256, "track": cal.track,
                      "control_hz": cal.control_hz, "log_s": _round(cal.log_s)},
        "fit": {"segments": cal.fit_segments, "segment_s": cal.segment_s, "holdout": cal.holdout, "seed": cal.seed,
                "rms_before": _round(cal.rms_before), "rms_after": _round(cal.rms_after),
                "seconds": _round(cal.seconds), "notes": list(cal.notes)},
    }


def write_config(cal: Calibration, path: Path | str) -> Path:
    """Write the calibrated twin config of `cal` to `path` (YAML)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Calibrated car twin (shakedown calibrate): params by the twin's randomization paths.\n"
    path.write_text(header + yaml.safe_dump(calibration_config(cal), sort_keys=False, width=120), encoding="utf-8")
    return path


def calibrated_params(path: Path | str, base: CarParams | None = None) -> CarParams:
    """`base` (default: the nominal CarParams) with the calibrated config's `params` set; CalibrationError
    naming the file and the entry when it is missing, not YAML, or a value the twin does not accept."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"no calibrated twin config at {path}: write one with `shakedown calibrate`")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{path} is not valid YAML: {exc}") from None
    params = data.get("params") if isinstance(data, dict) else None
    if not isinstance(params, dict):
        raise CalibrationError(f"{path}: no 'params' mapping of twin parameter paths to values "
                               "(e.g. params: {vehicle.mu: 0.9}); is it a file `shakedown calibrate` wrote?")
    out = base or CarParams()
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CalibrationError(f"{path}: params.{key} = {value!r} is not a finite number")
        try:
            out = replace_path(out, str(key), float(value))
        except ConfigError as exc:
            raise CalibrationError(f"{path}: params.{key}: {exc}") from None
    return out


def emulator_truth(recording: Path | str, params: Sequence[str] = DEFAULT_PARAMS,
                   base: CarParams | None = None) -> dict[str, float] | None:
    """The values the emulator that made `recording` really used (its declared RealityGap, from the
    trace.json beside it), by path; None when there is no such file. For reports and tests only."""
    trace = Path(recording).with_name("trace.json")
    if not trace.is_file():
        return None
    try:
        gap = json.loads(trace.read_text(encoding="utf-8")).get("gap")
        true = RealityGap(**gap).apply(base or CarParams()) if isinstance(gap, dict) else None
    except (ValueError, TypeError, ConfigError) as exc:
        raise CalibrationError(f"{trace}: cannot read the emulator's declared gap ({exc})") from None
    if true is None:
        return None
    out = {p: float(get_path(true, p)) for p in params}
    if BIAS in out:
        out[BIAS] = 0.0  # the emulator logs the twin's true speed: no offset, whatever its odometry noise
    return out
