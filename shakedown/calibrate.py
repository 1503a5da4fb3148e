"""`shakedown calibrate`: fit the car twin to a robot's own recording, and show how well it fits.

    shakedown calibrate --recording runs/emulator/session.mcap --out runs/calibration

Prints each parameter's estimate with its standard error (or UNIDENTIFIABLE and why), the true
value when the recording came from the emulator with a declared gap (read from its trace.json,
for this report only), and ADE/FDE of the nominal and the calibrated twin on held-out segments;
writes `calibration.yaml` (the calibrated twin config, see bridge/calibration/config.py) and
`calibration.html` (the same tables and each held-out segment replayed before and after).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from bridge.calibration import (
    DEFAULT_PARAMS,
    PARAMETERS,
    Calibration,
    CalibrationError,
    calibrate,
    emulator_truth,
    write_config,
)
from bridge.calibration.fit import check_params
from shakedown.report import HtmlReport
from twin.core.config import ConfigError, bounded, check_bounds, parse_config

PLOTTED_SEGMENTS = 6
"""Held-out segments drawn in the report (the first ones in time)."""


@dataclasses.dataclass(frozen=True)
class CalibrateConfig:
    """Fit the car twin's parameters to a robot's MCAP recording; report them and write the calibrated config."""

    recording: Path = Path("runs/emulator/session.mcap")
    """The robot's recording (session.mcap in a robot's or the emulator's run folder)."""
    out: Path = Path("runs/calibration")
    """Folder for calibration.yaml (the calibrated twin config) and calibration.html."""
    holdout: float = bounded(0.3, 0.05, 0.9)
    """Fraction of the segments held out of the fit; ADE/FDE before and after are measured on them."""
    segment_s: float = bounded(2.0, 0.25, 60.0)
    """Seconds of one replayed segment."""
    params: tuple[str, ...] = DEFAULT_PARAMS
    """Twin parameters to fit, by their randomization paths."""
    seed: int = 0
    """Seeds which segments are held out."""

    def __post_init__(self) -> None:
        check_bounds(self)
        try:
            check_params(self.params)
        except CalibrationError as exc:
            raise ConfigError(f"CalibrateConfig.{exc}") from None


def _number(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "UNIDENTIFIABLE"
    return f"{value:.4g} +- {std:.2g}" if std is not None else f"{value:.4g}"


def estimate_rows(cal: Calibration, truth: dict[str, float] | None) -> list[list[str]]:
    """One row per parameter: name, path, nominal, estimate +- std (or UNIDENTIFIABLE), true value."""
    return [[e.name, e.path, f"{e.nominal:.4g}", _number(e.value, e.std),
             _number(truth[e.path]) if truth and e.path in truth else "-"] for e in cal.estimates]


def error_rows(cal: Calibration) -> list[list[str]]:
    change = cal.ade_reduction
    return [["ADE (m)", f"{cal.ade_before:.4f}", f"{cal.ade_after:.4f}", "-" if math.isnan(change) else f"{-change:+.0%}"],
            ["FDE (m)", f"{cal.fde_before:.4f}", f"{cal.fde_after:.4f}", "-"]]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [header, *rows])


def summary(cal: Calibration) -> str:
    return (f"{cal.recording} ({cal.track}, {cal.log_s:.1f} s of drive at {cal.control_hz:g} Hz): {cal.fit_segments} "
            f"segments of {cal.segment_s:g} s fitted, {len(cal.heldout)} held out; {cal.seconds:.1f} s")


def report(cal: Calibration, truth: dict[str, float] | None, path: Path) -> Path:
    """calibration.html: the tables, then each plotted held-out segment as logged, nominal and calibrated."""
    page = HtmlReport(f"Calibration of the car twin: {cal.recording.name}")
    page.text(summary(cal))
    page.text(f"recording sha256 {cal.sha256}", "note")
    page.heading("Estimates")
    page.table(["parameter", "path", "nominal", "estimate +- std", "true (emulator's declared gap)"],
               estimate_rows(cal, truth))
    for p, why in cal.unidentifiable.items():
        page.text(f"{PARAMETERS[p].name} ({p}) is UNIDENTIFIABLE from this log: {why}.")
    for note in cal.notes:
        page.text(note, "note")
    page.heading("Held-out segments (never seen by the fit)")
    page.table(["", "nominal twin", "calibrated twin", "change"], error_rows(cal))
    for seg in cal.heldout[:PLOTTED_SEGMENTS]:
        fig, (xy, error, speed) = plt.subplots(1, 3, figsize=(13, 3.6))
        t = seg.t0 + np.arange(len(seg.observed)) / cal.control_hz
        for data, label, style in ((seg.observed, "logged", dict(color="0.6", lw=4)),
                                   (seg.before, "nominal twin", dict(color="C3", ls="--")),
                                   (seg.after, "calibrated twin", dict(color="C0"))):
            xy.plot(data[:, 0], data[:, 1], label=label, **style)
            speed.plot(t, data[:, 2], label=label, **style)
        for which, label, style in (("before", "nominal twin", dict(color="C3", ls="--")),
                                    ("after", "calibrated twin", dict(color="C0"))):
            error.plot(t[1:], seg.errors(which), label=label, **style)
        xy.plot(*seg.observed[0, :2], "ko")
        xy.set(xlabel="x (m)", ylabel="y (m)", title=f"path from t = {seg.t0:.2f} s")
        xy.set_aspect("equal", adjustable="datalim")
        error.set(xlabel="t (s)", ylabel="position error (m)", title="distance from the logged position")
        speed.set(xlabel="t (s)", ylabel="measured speed (m/s)")
        xy.legend(fontsize=8)
        page.figure(fig, f"segment at {seg.t0:.2f} s: ADE {seg.errors('before').mean():.4f} m nominal, "
                         f"{seg.errors('after').mean():.4f} m calibrated")
    return page.write(path)


def run_calibration(cfg: CalibrateConfig) -> Calibration:
    """Calibrate, print the tables, write calibration.yaml and calibration.html into `cfg.out`."""
    cal = calibrate(cfg.recording, cfg.params, cfg.holdout, cfg.segment_s, cfg.seed)
    truth = emulator_truth(cfg.recording, cfg.params)
    print(summary(cal))
    print(_table(["parameter", "path", "nominal", "estimate +- std", "true"], estimate_rows(cal, truth)))
    for p, why in cal.unidentifiable.items():
        print(f"UNIDENTIFIABLE {PARAMETERS[p].name} ({p}): {why}")
    for note in cal.notes:
        print(f"note: {note}")
    print(_table(["held out", "nominal twin", "calibrated twin", "change"], error_rows(cal)))
    config = write_config(cal, cfg.out / "calibration.yaml")
    page = report(cal, truth, cfg.out / "calibration.html")
    print(f"wrote {config} and {page}")
    sys.stdout.flush()
    return cal


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    run_calibration(parse_config(CalibrateConfig, argv, __doc__.split("\n\n")[0], prog))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `calibrate` command for shakedown/cli.py (its flags come from CalibrateConfig)."""
    sub.add_parser("calibrate", add_help=False, help="fit the car twin to a robot's MCAP recording: estimates with "
                   "uncertainty, ADE/FDE before and after on held-out segments, a calibrated twin config "
                   "(shakedown calibrate --help lists its flags)").set_defaults(
        func=lambda args, rest: main(rest, prog="shakedown calibrate"))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CalibrationError, ConfigError) as exc:
        print(f"shakedown calibrate: {exc}", file=sys.stderr)
        sys.exit(2)
