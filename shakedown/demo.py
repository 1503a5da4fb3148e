"""`shakedown demo`: default MPC parameters vs the scripted expert on a held-out track.

Runs every instruction category a few times with randomization on, every command through
the safety shield, prints a table (category, default error, expert error, improvement),
then stress-tests the shield with a reckless driver (violations with and without it).
Every decision goes into a signed audit log. The run folder gets an HTML report with the
paths and time series, the raw numbers as JSON, the audit log and its public key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro
from rich.console import Console
from rich.table import Table

from agents.policies.car_expert import FixedParamsPolicy, ScriptedCarExpert
from agents.tasks.car.drive_env import CarDriveConfig, CarDriveEnv
from agents.tasks.car.instruction_env import Attempt, CarInstructionEnv, CarTaskConfig
from agents.tasks.car.instructions import CATEGORIES
from agents.tasks.car.outcome import drive_outcome
from safety.audit import keys
from safety.audit.log import AuditLog
from safety.audit.records import decision_body
from safety.audit.verify import verify
from safety.car.spec import CarSafetySpec, SpeedZone
from shakedown.progress import progress_bar
from shakedown.report import HtmlReport, plt
from twin.car.randomization import CAR_RANDOMIZATION
from twin.car.tracks import HELD_OUT, Track, load_track
from twin.car.twin import CarTwinConfig
from twin.car.world import Obstacle
from twin.core.config import ConfigError
from twin.core.contracts import Decision, Observation, Policy


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The car demo: default MPC parameters, the scripted expert and the VLM agent on a held-out track,
    every command through the shield, every decision in a signed audit log."""

    track: str = HELD_OUT[0]
    """Track to drive: a name or procedural-<seed> (a held-out one by default)."""
    episodes_per_category: Annotated[int, tyro.conf.arg(name="episodes")] = 3
    """Randomized episodes per instruction category."""
    duration_s: Annotated[float, tyro.conf.arg(name="duration")] = 8.0
    """Simulated seconds per drive."""
    seed: int = 0
    """Base seed; the same seed gives the same table."""
    out_dir: Annotated[Path, tyro.conf.arg(name="out")] = Path("runs")
    """Where the run folder is created."""
    stress_episodes: int = 4
    """Episodes of the reckless driver, each with and without the shield."""
    stress_steps: int = 400
    """Control steps (50 Hz) per reckless episode."""
    vlm: bool = True
    """Also run the VLM agent with the shipped adapter (agents/adapters/car), if present (--no-vlm skips it)."""

    def __post_init__(self) -> None:
        load_track(self.track)
        if self.episodes_per_category < 1 or self.stress_episodes < 1:
            raise ConfigError("DemoConfig.episodes_per_category and stress_episodes must be >= 1")


@dataclasses.dataclass
class EpisodeRow:
    category: str
    instruction: str
    seed: int
    default: Attempt
    expert: Attempt | None
    vlm: Attempt | None = None
    vlm_status: str = ""


SHIPPED_ADAPTER = Path(__file__).resolve().parents[1] / "agents" / "adapters" / "car"
"""The adapter `shakedown train car --stage sft` produced for this release (recipe in its manifest)."""
SAFETY = CarSafetySpec(zones=(SpeedZone(s_start=20.0, s_end=32.0, v_max=2.0),))
"""The demo's hard constraints: the defaults plus a slow zone (think pit lane) the MPC does not know of."""
OBSTACLES = (Obstacle(s=45.0, d=0.35, size=0.3), Obstacle(s=70.0, d=-0.3, size=0.35))
"""Boxes on the track for the shield stress test."""


def _log_decision(log: AuditLog, obs: Observation, decision: Decision, attempt: Attempt, frame: str | None,
                  context: dict, track: Track, default: Attempt) -> None:
    log.append("decision", decision_body(obs, decision, executed=attempt.params.as_dict(), shield=attempt.trace.shield,
                                         costs=attempt.trace.costs, frame_sha256=frame,
                                         context={**context, "error": attempt.metrics["error"],
                                                  "improvement": attempt.improvement},
                                         outcome=drive_outcome(attempt.trace, track, default.trace)))


def shipped_agent(console: Console) -> Policy | None:
    """The VLM agent with the adapter shipped in the repository, if there is one."""
    if not (SHIPPED_ADAPTER / "adapter_model.safetensors").exists():
        console.print(f"(no shipped adapter at {SHIPPED_ADAPTER}: the VLM column is skipped)")
        return None
    from agents.vlm.loading import agent_from_adapter

    return agent_from_adapter(SHIPPED_ADAPTER, "car", merge=True)


def run_episodes(cfg: DemoConfig, console: Console, log: AuditLog) -> list[EpisodeRow]:
    env = CarInstructionEnv(CarTaskConfig(tracks=(cfg.track,), split="heldout", duration_s=cfg.duration_s,
                                          safety=SAFETY))
    expert, default = ScriptedCarExpert(), FixedParamsPolicy()
    vlm = shipped_agent(console) if cfg.vlm else None
    track = load_track(cfg.track)
    rows: list[EpisodeRow] = []
    total = len(CATEGORIES) * cfg.episodes_per_category
    with progress_bar() as bar:
        task = bar.add_task("episodes", total=total)
        for ci, cat in enumerate(CATEGORIES):
            for i in range(cfg.episodes_per_category):
                seed = cfg.seed * 10_000 + ci * 100 + i
                _, info = env.reset(seed=seed, options={"category": cat})
                obs = info["observation"]
                row = EpisodeRow(cat, info["instruction"], seed, env.default_attempt(), None)
                decision = expert.decide(obs)
                row.expert = env.evaluate(decision.action)
                frame = log.store_frame(obs.image) if obs.image is not None else None
                context = {"track": cfg.track, "seed": seed, "category": cat}
                _log_decision(log, obs, default.decide(obs), row.default, frame, context, track, row.default)
                _log_decision(log, obs, decision, row.expert, frame, context, track, row.default)
                if vlm is not None:
                    answer = vlm.decide(obs)
                    row.vlm_status = answer.parse_status
                    row.vlm = env.evaluate(answer.action, failed_parse=answer.parse_status.startswith("fallback"))
                    _log_decision(log, obs, answer, row.vlm, frame, context, track, row.default)
                rows.append(row)
                bar.advance(task)
    env.close()
    return rows


def shield_stress(cfg: DemoConfig, log: AuditLog) -> list[dict]:
    """A reckless driver (random throttle and steering) with and without the shield."""
    results = []
    with progress_bar() as bar:
        task = bar.add_task("shield stress", total=2 * cfg.stress_episodes)
        for shielded in (False, True):
            env = CarDriveEnv(CarDriveConfig(
                twin=CarTwinConfig(track=cfg.track, randomization=CAR_RANDOMIZATION, obstacles=OBSTACLES),
                max_steps=cfg.stress_steps, safety=SAFETY, shield=shielded))
            rng = np.random.default_rng(cfg.seed)
            totals = {"collision": 0.0, "speed": 0.0, "lateral_accel": 0.0}
            interventions: dict[str, int] = {}
            steps = 0
            for ep in range(cfg.stress_episodes):
                env.reset(seed=cfg.seed * 1000 + ep)
                episode_costs = {k: 0.0 for k in totals}
                done = False
                while not done:
                    action = np.array([rng.uniform(0.3, 1.0) * rng.choice([1, 1, 1, -1]), rng.uniform(-1, 1)],
                                      np.float32)
                    _, _, term, trunc, info = env.step(action)
                    steps += 1
                    for k, v in info["cost_terms"].items():
                        totals[k] += v
                        episode_costs[k] += v
                    done = term or trunc
                counts = env.guard.counter.as_dict()
                for reason, n in counts["by_reason"].items():
                    interventions[reason] = interventions.get(reason, 0) + n
                obs = Observation(timestamp=env.twin.state.t, state={"episode": float(ep)},
                                  instruction="reckless stress test")
                log.append("decision", decision_body(
                    obs, Decision(action={"driver": "uniform random throttle and steering"},
                                  policy_id="reckless-random", thought="(no reasoning: a stress test)"),
                    executed={"shield": shielded}, shield=counts, costs=episode_costs,
                    context={"episode": ep, "steps": steps}))
                bar.advance(task)
            env.close()
            results.append({"shield": shielded, "episodes": cfg.stress_episodes, "steps": steps,
                            "violations": totals, "interventions": sum(interventions.values()),
                            "by_reason": interventions})
    return results


def summarize(rows: list[EpisodeRow]) -> list[dict]:
    out = []
    for cat in CATEGORIES:
        rs = [r for r in rows if r.category == cat]
        out.append({
            "category": cat,
            "default_error": float(np.mean([r.default.metrics["error"] for r in rs])),
            "expert_error": float(np.mean([r.expert.metrics["error"] for r in rs])),
            "improvement": float(np.mean([r.expert.improvement for r in rs])),
            "default_crashes": int(sum(r.default.trace.crashed for r in rs)),
            "expert_crashes": int(sum(r.expert.trace.crashed for r in rs)),
            "default_interventions": int(sum(r.default.trace.shield.get("interventions", 0) for r in rs)),
            "expert_interventions": int(sum(r.expert.trace.shield.get("interventions", 0) for r in rs)),
            **({"vlm_error": float(np.mean([r.vlm.metrics["error"] for r in rs])),
                "vlm_improvement": float(np.mean([r.vlm.improvement for r in rs])),
                "vlm_parse_failures": int(sum(r.vlm_status.startswith("fallback") for r in rs))}
               if rs[0].vlm is not None else {}),
            "episodes": len(rs),
        })
    return out


def _path_figure(row: EpisodeRow, track_name: str) -> plt.Figure:
    track = load_track(track_name)
    left, right = track.boundaries()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    ax = axes[0]
    ax.plot(*left.T, color="0.3", lw=1)
    ax.plot(*right.T, color="0.3", lw=1)
    for attempt, marker in ((row.default, "o"), (row.expert, "s")):
        tr = attempt.trace
        sc = ax.scatter(tr["x"], tr["y"], c=tr["v"], cmap="viridis", s=6, marker=marker, vmin=-1.5, vmax=5)
    fig.colorbar(sc, ax=ax, label="speed (m/s)")
    ax.set_aspect("equal")
    ax.set_title("path (o default, s expert), coloured by speed")
    for attempt, name in ((row.default, "default"), (row.expert, "expert")):
        tr = attempt.trace
        axes[1].plot(tr["t"], tr["v"], label=name)
        axes[2].plot(tr["t"], tr["d"], label=name)
    axes[1].set(xlabel="time (s)", ylabel="speed (m/s)", title="speed")
    axes[2].set(xlabel="time (s)", ylabel="lateral offset d (m)", title="lateral offset")
    for ax in axes[1:]:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"{row.category}: \u201c{row.instruction}\u201d (seed {row.seed})")
    return fig


def write_report(cfg: DemoConfig, rows: list[EpisodeRow], summary: list[dict], stress: list[dict], audit: str,
                 run_dir: Path) -> Path:
    rep = HtmlReport(f"Shakedown demo: instruction following on '{cfg.track}' (held out)")
    rep.text("Each episode draws a randomized world (friction, mass, actuation delay, sensor noise, colours) "
             "and a held-out paraphrase. The default MPC parameters and the scripted expert drive the same "
             "episode; improvement = (default error - expert error) / default error; a crash scores -1.")
    rep.heading("Results")
    has_vlm = "vlm_improvement" in summary[0]
    rep.table(["category", "default error", "expert error", "expert improvement", "default crashes", "expert crashes",
               *(("VLM error", "VLM improvement", "VLM parse failures") if has_vlm else ())],
              [[s["category"], s["default_error"], s["expert_error"], f"{100 * s['improvement']:.1f} %",
                s["default_crashes"], s["expert_crashes"],
                *((s["vlm_error"], f"{100 * s['vlm_improvement']:.1f} %", s["vlm_parse_failures"]) if has_vlm else ())]
               for s in summary])
    adapt = float(np.mean([s["improvement"] for s in summary]))
    rep.text(f"Control adaptability of the expert (mean improvement): {100 * adapt:.1f} %")
    if has_vlm:
        vlm_adapt = float(np.mean([s["vlm_improvement"] for s in summary]))
        rep.text(f"Control adaptability of the VLM agent with the shipped adapter: {100 * vlm_adapt:.1f} % "
                 "(failed parses and crashes score -100 %). Its chains of thought are in the audit log "
                 "(`shakedown audit report`).")
    rep.heading("The shield")
    rep.text("Every command above passed the shield (a slow zone of 2 m/s at s = 20-32 m that the MPC does not "
             "know of, lateral acceleration and stopping-distance limits). Below, a reckless driver with random "
             "throttle and steering, on the same track with two boxes on it, with and without the shield.")
    rep.table(["shield", "steps", "collisions", "speed violations", "lateral accel. violations", "interventions",
               "by reason"],
              [["on" if r["shield"] else "off", r["steps"], int(r["violations"]["collision"]),
                int(r["violations"]["speed"]), int(r["violations"]["lateral_accel"]), r["interventions"],
                ", ".join(f"{k}: {n}" for k, n in r["by_reason"].items())] for r in stress])
    rep.heading("Audit log")
    rep.text(audit)
    rep.text("audit.log holds every decision (policy, instruction, chain of thought, action, shield verdicts, costs, "
             "camera frame digest), hash-chained and checkpointed with Ed25519 signatures. Check it with "
             "`shakedown audit verify audit.log --key audit-key.pub`; read it with `shakedown audit report`.",
             css_class="note")
    rep.heading("Drives")
    for cat in CATEGORIES:
        row = next(r for r in rows if r.category == cat)
        rep.figure(_path_figure(row, cfg.track), caption=f"{cat}: first episode")
    rep.heading("Episodes")
    rep.table(["category", "instruction", "seed", "default error", "expert error", "improvement",
               "MPC p50 (ms)"],
              [[r.category, r.instruction, r.seed, r.default.metrics["error"], r.expert.metrics["error"],
                r.expert.improvement, r.expert.trace.mpc_solve_p50_ms()] for r in rows])
    return rep.write(run_dir / "report.html")


def run_demo(cfg: DemoConfig, console: Console | None = None) -> Path:
    """Run the demo and return the run folder."""
    console = console or Console(width=None if Console().is_terminal else 120)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = cfg.out_dir / f"demo-{stamp}"
    console.print(f"[bold]Shakedown demo[/]: track '{cfg.track}' (held out), "
                  f"{cfg.episodes_per_category} randomized episodes x {len(CATEGORIES)} categories")
    key = keys.generate(run_dir / "audit-key.pem", run_dir / "audit-key.pub")
    with AuditLog(run_dir / "audit.log", key) as log:
        rows = run_episodes(cfg, console, log)
        stress = shield_stress(cfg, log)
    summary = summarize(rows)
    table = Table(title="Instruction following: default parameters, scripted expert"
                  + (" and the VLM agent" if "vlm_improvement" in summary[0] else "") + " (shield on)")
    has_vlm = "vlm_improvement" in summary[0]
    for col in ("category", "default error", "expert error", "improvement", "crashes (def/exp)", "interventions",
                *(("VLM improvement", "VLM parse failures") if has_vlm else ())):
        table.add_column(col, justify="right")
    for s in summary:
        table.add_row(s["category"], f"{s['default_error']:.3f}", f"{s['expert_error']:.3f}",
                      f"{100 * s['improvement']:.1f} %", f"{s['default_crashes']}/{s['expert_crashes']}",
                      f"{s['default_interventions']}/{s['expert_interventions']}",
                      *((f"{100 * s['vlm_improvement']:.1f} %", str(s["vlm_parse_failures"])) if has_vlm else ()))
    adapt = float(np.mean([s["improvement"] for s in summary]))
    vlm_adapt = f"[bold]{100 * np.mean([s['vlm_improvement'] for s in summary]):.1f} %" if has_vlm else None
    table.add_row("[bold]adaptability", "", "", f"[bold]{100 * adapt:.1f} %", "", "",
                  *((vlm_adapt, "") if has_vlm else ()))
    console.print(table)
    st = Table(title="Shield stress test: reckless driver, randomized world, obstacles, a slow zone")
    for col in ("shield", "steps", "collisions", "speed violations", "lat. accel violations", "interventions"):
        st.add_column(col, justify="right")
    for r in stress:
        v = r["violations"]
        st.add_row("on" if r["shield"] else "off", str(r["steps"]), f"{v['collision']:.0f}", f"{v['speed']:.0f}",
                   f"{v['lateral_accel']:.0f}", str(r["interventions"]))
    console.print(st)
    audit = verify(run_dir / "audit.log", key.public_key())
    console.print(f"audit log: {audit.summary()}")
    report = write_report(cfg, rows, summary, stress, audit.summary(), run_dir)
    (run_dir / "results.json").write_text(json.dumps({
        "config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
        "summary": summary, "control_adaptability": adapt, "shield_stress": stress,
        "audit": audit.summary(),
        "episodes": [{"category": r.category, "instruction": r.instruction, "seed": r.seed,
                      "default": r.default.metrics, "expert": r.expert.metrics,
                      "expert_improvement": r.expert.improvement} for r in rows],
    }, indent=2))
    console.print(f"report: {report}")
    console.print(f"verify the log yourself: shakedown audit verify {run_dir / 'audit.log'} "
                  f"--key {run_dir / 'audit-key.pub'}")
    return run_dir
