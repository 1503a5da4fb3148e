"""Calibration: the car twin's parameters fitted to a robot's own MCAP recording.

`calibrate(recording)` replays the logged commands in the twin from the logged states, segment
by segment, fits friction, mass, motor gain, steering offset, actuation delay and speed-sensor
bias by least squares, reports each with its standard error or, when the log cannot tell,
why it is unidentifiable, and measures ADE/FDE before and after on held-out segments.
`write_config` saves the calibrated twin config; `calibrated_params` reads it back as
`CarParams`. Modules: `log` (reading the recording), `replay` (the twin replaying segments),
`fit` (the least squares and its analysis), `config` (the YAML file).
"""

from bridge.calibration.config import calibrated_params, calibration_config, emulator_truth, write_config
from bridge.calibration.fit import DEFAULT_PARAMS, PARAMETERS, Calibration, Estimate, HeldOut, calibrate, resolution
from bridge.calibration.log import CalibrationError, DriveLog, read_log

__all__ = ["DEFAULT_PARAMS", "PARAMETERS", "Calibration", "CalibrationError", "DriveLog", "Estimate", "HeldOut",
           "calibrate", "calibrated_params", "calibration_config", "emulator_truth", "read_log", "resolution",
           "write_config"]
