"""The scenario report: failure maps, estimates converging inside their intervals, the top
failures replayed with their trajectories, and the exact command to replay each.

Reads the study JSONs a scenario folder holds (`shakedown scenario run|search|estimate`
write them) and replays the top failures (replay is exact, so the plots show the very
episodes that were found).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from shakedown.report import HtmlReport

TOP_FAILURES = 3


def _finite(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def sample_rows(episodes: list[dict], n: int = 12) -> list[list[Any]]:
    """The `n` lowest-robustness episodes (failures first) as table rows."""
    ranked = sorted((e for e in episodes if e["error"] is None), key=lambda e: _finite(e["robustness"]))[:n]
    return [[e["index"], _finite(e["robustness"]), "yes" if e["failed"] else "no",
             (e["signature"] or {}).get("monitor", "-"), (e["signature"] or {}).get("t", "-"),
             (e["signature"] or {}).get("where", "-"), _finite(e["loglik"])] for e in ranked]


def pick_axes(dims: list[str], episodes: list[dict]) -> tuple[int, int]:
    """The two coordinates whose values differ most between failures and passes (by mean |z| gap)."""
    z = np.array([e["z"] for e in episodes], float)
    failed = np.array([e["failed"] for e in episodes])
    if z.shape[1] < 2:
        return 0, 0
    if failed.any() and (~failed).any():
        gap = np.abs(z[failed].mean(0) - z[~failed].mean(0))
    else:
        gap = z.std(0)
    first, second = np.argsort(-gap)[:2]
    return int(first), int(second)


def failure_map(study: dict, axes: tuple[str, str] | None) -> plt.Figure:
    """Samples in two sample-vector coordinates, coloured by robustness; failures ringed in red."""
    dims = list(study["dims"])
    eps = [e for e in study["episodes"] if e["error"] is None and e["valid"]]
    i, j = (dims.index(axes[0]), dims.index(axes[1])) if axes else pick_axes(dims, eps)
    z = np.array([e["z"] for e in eps], float)
    r = np.array([_finite(e["robustness"]) for e in eps])
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    if z.shape[1] == 1 or i == j:
        y = r
        ax.set_ylabel("robustness")
    else:
        y = z[:, j]
        ax.set_ylabel(f"{dims[j]} (z)")
    lim = np.nanmax(np.abs(r)) if len(r) else 1.0
    sc = ax.scatter(z[:, i], y, c=r, cmap="RdYlGn", vmin=-lim, vmax=lim, s=18)
    failed = r < 0
    ax.scatter(z[failed, i], y[failed], facecolors="none", edgecolors="red", s=60, linewidths=1.2, label="failure")
    ax.set_xlabel(f"{dims[i]} (z)")
    fig.colorbar(sc, ax=ax, label="robustness (< 0: failed)")
    if failed.any():
        ax.legend(loc="best")
    ax.set_title(f"{study['kind']} {study['method']}: {int(failed.sum())} failures in {len(eps)} valid episodes")
    return fig


def convergence(study: dict) -> plt.Figure:
    """The estimate after each batch or level, with its confidence band."""
    est = study["estimate"]
    h = np.array(est["history"], float) if est["history"] else np.zeros((0, 4))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    if len(h):
        ax.plot(h[:, 0], h[:, 1], "o-", label="estimate")
        ax.fill_between(h[:, 0], np.maximum(h[:, 2], 1e-12), np.maximum(h[:, 3], 1e-12), alpha=0.25,
                        label=f"{int(est['confidence'] * 100)}% interval")
    if est["p"] > 0:
        ax.set_yscale("log")
    ax.set_xlabel("episodes")
    ax.set_ylabel("P(failure)")
    ax.set_title(est["summary"], fontsize=9)
    ax.legend(loc="best")
    return fig


def trajectory(text: str, episode: dict) -> plt.Figure:
    """A failing episode replayed: its path (car) and the failing monitor's signals over time."""
    from scenarios.episode import run_episode, runner_for

    result, signals = run_episode(text, episode["z"], episode["seed"], keep_trace=True)
    runner = runner_for(text)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    if runner.scenario.world.kind == "car":
        track = runner.twin.track
        left, right = track.boundaries()
        for b in (left, right):
            axes[0].plot(*np.vstack([b, b[:1]]).T, color="0.5", lw=1)
        tr = result.info["trace"]
        axes[0].plot(tr["x"], tr["y"], color="tab:blue", lw=1.5, label="car")
        for x, y, size, appeared in result.info.get("obstacles", []):
            axes[0].add_patch(plt.Rectangle((x - size / 2, y - size / 2), size, size,
                                            color="tab:orange" if appeared else "0.3"))
        if result.signature:
            k = int(np.argmin(np.abs(signals["t"] - result.signature.t)))
            axes[0].plot(tr["x"][k], tr["y"][k], "rx", ms=10, mew=2)
        axes[0].set_aspect("equal")
        axes[0].set_title("path (blue), walls, obstacles (orange: appeared), failure (x)", fontsize=9)
    else:
        for name in ("tool_speed", "belt_speed", "jammed", "person_in_cell", "intervened"):
            axes[0].plot(signals["t"], signals[name], label=name)
        axes[0].legend(fontsize=7)
        axes[0].set_xlabel("t (s)")
        axes[0].set_title("the cell: arm and belt speed (m/s), jam, person, shield", fontsize=9)
    monitor = result.signature.monitor if result.signature else next(iter(result.monitors))
    formula = dict(runner.scenario.monitors)[monitor]
    from scenarios.stl import parse

    for name in sorted(parse(formula).signals):
        axes[1].plot(signals["t"], signals[name], label=name)
    if result.signature:
        axes[1].axvline(result.signature.t, color="red", ls="--", label="failure")
    for t_fired, name in result.info.get("events_fired", []):
        axes[1].axvline(t_fired, color="0.4", ls=":", label=f"event {name}")
    axes[1].set_xlabel("t (s)")
    axes[1].set_title(f"monitor {monitor}: {formula}", fontsize=9)
    axes[1].legend(fontsize=7, loc="best")
    return fig


def write_report(folder: Path, axes: tuple[str, str] | None = None) -> Path:
    """report.html in `folder`, from every study JSON there."""
    from scenarios.loader import load_text
    from shakedown.scenario_cli import replay_command

    studies = [(p, json.loads(p.read_text())) for p in sorted(folder.glob("*.json")) if not p.name.startswith("shrunk")]
    studies = [(p, s) for p, s in studies if "episodes" in s]
    if not studies:
        raise ValueError(f"{folder} holds no study results; run `shakedown scenario run|search|estimate` first")
    name = studies[0][1]["scenario"]
    report = HtmlReport(f"Scenario {name}")
    text, source = studies[0][1]["text"], studies[0][1]["source"]
    scenario = load_text(text, source)
    report.text(scenario.description)
    rows = []
    for path, s in studies:
        eps = s["episodes"]
        rows.append([path.name, s["kind"], s["method"], len(eps), sum(e["failed"] for e in eps),
                     sum((not e["valid"]) and e["error"] is None for e in eps), sum(e["error"] is not None for e in eps),
                     s["estimate"]["summary"] if s.get("estimate") else "-"])
    report.heading("Studies")
    report.table(["file", "kind", "method", "episodes", "failures", "rejected (invalid)", "errored", "estimate"], rows)
    for path, s in studies:
        report.heading(f"{s['kind']} {s['method']} ({path.name})")
        if len(s["dims"]) >= 1 and s["episodes"]:
            report.figure(failure_map(s, axes), "Each dot an episode; colour = robustness; red rings = failures.")
        report.table(["episode", "robustness", "failed", "monitor", "when (s)", "where", "log-likelihood"],
                     sample_rows(s["episodes"]))
        if s.get("estimate") and s["kind"] == "estimate":
            report.figure(convergence(s), "The estimate as episodes accumulate, with its confidence band.")
    failures = sorted((e | {"_study": p.name} for p, s in studies for e in s["episodes"] if e["failed"]),
                      key=lambda e: -_finite(e["loglik"]))
    if failures:
        report.heading(f"Top failures (most likely first, of {len(failures)})")
        seen = set()
        for e in failures:
            key = (tuple(e["z"]), e["seed"])
            if key in seen or len(seen) >= TOP_FAILURES:
                continue
            seen.add(key)
            study = next(s for p, s in studies if p.name == e["_study"])
            shield = "off" if "shield-off" in e["_study"] else ("on" if "shield-on" in e["_study"] else None)
            run_text = study["text"]
            report.text(f"{e['_study']} episode {e['index']}: {e['signature']}, log-likelihood {e['loglik']:.2f}")
            report.html(f"<pre>{replay_command(study['source'] or source, e['z'], e['seed'], shield)}</pre>")
            report.figure(trajectory(run_text, e), "The failing episode, replayed exactly.")
    return report.write(folder / "report.html")

