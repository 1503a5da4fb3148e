"""One rung over the bridge: serve the rung's policy on loopback, drive the emulator, collect what it measured.

The policy side is a `PolicyServer` in this process; the robot is the emulator
(`bridge.robot.car.emulator.run_emulator`), called in this process or started as its own
(`python -m bridge.rollout.session CONFIG.json`, the config written by `write_config`),
speaking only the bridge protocol over real ZeroMQ either way. The sim rung drives the
twin as it is (no reality gap) as fast as it can; the other rungs drive the emulator with
the plan's declared gap in real time, under the rung's envelope and limits.

Given the rollout's folder, the robot co-signs the ladder's `rollout.log` head into its own
witness store (`witness/robot/`) before it drives, and refuses the session when the ladder's
history was cut back or rewritten since it last saw it (`bridge.robot.gate.witness_before_session`);
a subprocess robot gets the paths in its config.

`rung_data` turns the emulator's report and the served policy's records into the rung's
`RungData`: its clock starts when the first decision was applied; periods after a limit held
the car are not the rung's data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bridge.robot.car.emulator import EmulatorConfig, RealityGap, run_emulator
from bridge.rollout.metrics import COST_NAMES, DECISION_COLUMNS, RUNGS, SIM, RungData, empty_decisions
from bridge.rollout.plan import RolloutPlan, Rung
from bridge.rollout.record import LOG_FILE, PUBLIC_FILE, ROBOT_WITNESS
from bridge.server import PolicyServer, ServerConfig
from safety.car.spec import CarSafetySpec
from twin.core.contracts import Policy

ROBOT_DIR = "robot"
LINK_FAULT_REFUSALS = ("unknown observation", "not newer", "stale")
"""Refusal reasons (the text before the colon) that say the link delivered something late, twice or out of order."""
INVALID_REFUSALS = ("invalid action", "policy side refused")
"""Refusal reasons that say the decision itself was bad, or the policy could not answer."""
SESSION_SLACK_S = 120.0
"""A subprocess robot gets the rung's time, its wait for a first decision, and this much more."""


def emulator_config(plan: RolloutPlan, rung: Rung, endpoint: str, out: Path,
                    rollout: Path | None = None) -> EmulatorConfig:
    """The emulated robot for one rung: the plan's robot, the rung's envelope and limits; sim has no gap. Each
    rung draws its own noise (seed + the rung's place in the ladder): no rung is a replay of another. With
    `rollout` (the rollout's folder) the robot witnesses its log before it drives."""
    r = plan.robot
    witness = {} if rollout is None else {"witness_log": str(rollout / LOG_FILE),
                                          "witness_log_key": str(rollout / PUBLIC_FILE),
                                          "witness_store": str(rollout / ROBOT_WITNESS)}
    return EmulatorConfig(endpoint=endpoint, instruction=plan.instruction, track=plan.track, start_s=r.start_s,
                          seed=r.seed + RUNGS.index(rung.name), duration_s=rung.limits.time_s, control_hz=r.control_hz,
                          decide_every_s=r.decide_every_s, gap=RealityGap() if rung.name == SIM else r.gap,
                          out=out, name=f"emulator-{rung.name}", envelope=rung.envelope, realtime=rung.name != SIM,
                          max_wait_s=r.max_wait_s, distance_limit_m=rung.limits.distance_m, area_s=rung.limits.area_s,
                          **witness)


def write_config(cfg: EmulatorConfig, path: Path) -> Path:
    """An emulator config as JSON (zones included, which have no command-line flags)."""
    data = dataclasses.asdict(cfg)
    data["out"] = str(cfg.out)
    path.write_text(json.dumps(data, indent=1))
    return path


def read_config(path: Path) -> EmulatorConfig:
    data = json.loads(Path(path).read_text())
    return EmulatorConfig(**{**data, "gap": RealityGap(**data["gap"]), "envelope": CarSafetySpec.from_dict(data["envelope"]),
                             "out": Path(data["out"]), "area_s": tuple(data["area_s"])})


def run_robot(cfg: EmulatorConfig, process: str) -> dict[str, Any]:
    """Drive one session of the emulator, here or in its own process; its report."""
    if process == "in-process":
        return run_emulator(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    config = write_config(cfg, cfg.out / "emulator.json")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "bridge.rollout.session", str(config)], capture_output=True, text=True,
                          env=env, timeout=cfg.duration_s + cfg.max_wait_s + SESSION_SLACK_S)
    if done.returncode != 0:
        raise RuntimeError(f"the emulator process failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads((cfg.out / "trace.json").read_text())


def run_session(plan: RolloutPlan, rung: Rung, policy: Policy, out: Path,
                recorder: Callable[[str, Any, list], None] | None = None, rollout: Path | None = None) -> dict[str, Any]:
    """Serve `policy` on a free loopback port and drive the rung's robot against it; the robot's report
    (`session_refused`: why the robot refused to drive, or None). `rollout`: see `emulator_config`."""
    server = PolicyServer(policy, ServerConfig(endpoint="tcp://127.0.0.1:0"), recorder=recorder)
    server.start()
    try:
        result = run_robot(emulator_config(plan, rung, server.endpoint, out / ROBOT_DIR, rollout), plan.robot.process)
    finally:
        server.stop()
    result["server"] = dict(server.counts)
    return result


def rung_data(plan: RolloutPlan, rung: Rung, result: dict[str, Any], records: list[dict[str, float]]) -> RungData:
    """The rung's measurements on its own clock, from the robot's report and the served policy's records."""
    period = 1.0 / plan.robot.control_hz
    modes = np.asarray(result["trace"]["mode"])
    periods = {k: np.asarray(v, float) for k, v in result["periods"].items()}
    n = min(len(modes), len(periods["t"]))
    armed = np.flatnonzero(modes[:n] != "waiting")
    if len(armed) == 0:  # the car never moved: nothing was driven
        t0, keep = 0.0, np.zeros(n, bool)
    else:
        t0 = float(periods["t"][armed[0]]) - period  # the first driven period ends one period in
        keep = np.zeros(n, bool)
        keep[armed] = True
        keep &= periods["limited"][:n] < 0.5
    drive = {"t": periods["t"][:n][keep] - t0,
             **{k: periods[k][:n][keep] for k in ("v", "d", "ax", "ay", "intervened")},
             **{f"cost_{c}": periods[f"cost_{c}"][:n][keep] for c in COST_NAMES}}
    # Link trouble before the first decision was applied is the session being set up (the robot builds its MPC
    # and shield after opening its socket), not the rung's: the rung's clock has not started.
    events = [(t - t0, kind) for t, kind in robot_events(result) if kind != "link_fault" or t - t0 > 0]
    decisions = empty_decisions()
    if records:
        decisions = {name: np.array([r[name] for r in records], float) for name in DECISION_COLUMNS}
        decisions["t"] = np.maximum(decisions["t"] - t0, 0.0) if len(armed) else decisions["t"] * 0.0
    return RungData(rung.name, plan.instruction, period, drive, decisions, events, dict(rung.evidence_values))


def robot_events(result: dict[str, Any]) -> list[tuple[float, str]]:
    """(twin time, 'stop' | 'link_fault' | 'invalid_decision') from the robot's logged events."""
    out = [(float(t), "stop") for t in result.get("estops", [])]
    for e in result.get("events", []):
        kind, detail = e["kind"], e["detail"].split(":")[0]
        if kind == "safe_stop":
            out.append((e["t"], "stop"))
        elif kind == "refusal" and detail in INVALID_REFUSALS:
            out.append((e["t"], "invalid_decision"))
        elif kind == "refusal" and detail in LINK_FAULT_REFUSALS:
            out.append((e["t"], "link_fault"))
        elif kind == "link" and e["detail"] in ("reconnect", "malformed", "refused", "stop"):
            out.append((e["t"], "link_fault"))
    return out


def robot_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the robot reported, without its per-period records (for the log's evidence)."""
    return {"reason": result["reason"], "applied": result["applied"], "refused": result["refused"],
            "safe_stops": len(result["safe_stops"]), "estops": len(result.get("estops", [])),
            "shield_interventions": result["shield_interventions"], "observations_sent": result["observations_sent"],
            "link": result["link"], "limit": result.get("limit"), "server": result.get("server", {}),
            "gap": result["gap"], "session_refused": result.get("session_refused")}


def main(argv: list[str] | None = None) -> None:
    """The emulator of one rung in its own process: `python -m bridge.rollout.session CONFIG.json`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m bridge.rollout.session CONFIG.json (written by bridge.rollout.session."
                         "write_config)")
    run_emulator(read_config(Path(args[0])))


if __name__ == "__main__":
    main()
