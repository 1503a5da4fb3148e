"""Part 1 of the car demo: the twin, the agent and the shield.

Default MPC parameters, the scripted expert and the VLM agent with the shipped adapter drive
the same randomized episodes of every instruction category on a held-out track (scored by
`agents.tasks.car.metrics`, the metric without the crawl and reverse loopholes), every command
through the shield; then a reckless driver with and without the shield. Every decision goes
into the demo's signed audit log with its chain of thought.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from rich.console import Console

from agents.policies.car_expert import FixedParamsPolicy, ScriptedCarExpert
from agents.tasks.car.drive_env import CarDriveConfig, CarDriveEnv
from agents.tasks.car.instruction_env import Attempt, CarInstructionEnv, CarTaskConfig
from agents.tasks.car.instructions import CATEGORIES
from agents.tasks.car.outcome import drive_outcome
from safety.audit.log import AuditLog
from safety.audit.records import decision_body
from safety.car.spec import CarSafetySpec, SpeedZone
from shakedown.demo.part import Part, Table
from shakedown.progress import progress_bar
from shakedown.report import HtmlReport, plt
from twin.car.randomization import CAR_RANDOMIZATION
from twin.car.tracks import Track, load_track
from twin.car.twin import CarTwinConfig
from twin.car.world import Obstacle
from twin.core.contracts import Decision, Observation, Policy

SHIPPED_ADAPTERS = Path(__file__).resolve().parents[2] / "agents" / "adapters"
"""One folder per task (car, factory): the adapters the repository ships, with recipe and evaluation."""
SHIPPED_ADAPTER = SHIPPED_ADAPTERS / "car"
"""The car adapter shipped with this release (its recipe is in its manifest)."""
SAFETY = CarSafetySpec(zones=(SpeedZone(s_start=20.0, s_end=32.0, v_max=2.0),))
"""The demo's hard constraints: the defaults plus a slow zone (think pit lane) the MPC does not know of."""
OBSTACLES = (Obstacle(s=45.0, d=0.35, size=0.3), Obstacle(s=70.0, d=-0.3, size=0.35))
"""Boxes on the track for the shield stress test."""


@dataclasses.dataclass
class EpisodeRow:
    category: str
    instruction: str
    seed: int
    default: Attempt
    expert: Attempt
    vlm: Attempt | None = None
    vlm_status: str = ""
    vlm_thought: str = ""


def shipped_agent(console: Console, task: str = "car") -> Policy | None:
    """The VLM agent with the adapter the repository ships for `task`, if there is one."""
    adapter = SHIPPED_ADAPTERS / task
    if not (adapter / "adapter_model.safetensors").exists():
        console.print(f"(no shipped adapter at {adapter}: the VLM column is skipped)")
        return None
    from agents.vlm.loading import agent_from_adapter

    return agent_from_adapter(adapter, task, merge=True)


def _log_decision(log: AuditLog, obs: Observation, decision: Decision, attempt: Attempt, frame: str | None,
                  context: dict, track: Track, default: Attempt) -> None:
    log.append("decision", decision_body(obs, decision, executed=attempt.params.as_dict(), shield=attempt.trace.shield,
                                         costs=attempt.trace.costs, frame_sha256=frame,
                                         context={**context, "error": attempt.metrics["error"],
                                                  "improvement": attempt.improvement},
                                         outcome=drive_outcome(attempt.trace, track, default.trace)))


def run_episodes(track_name: str, episodes: int, duration_s: float, seed: int, vlm: Policy | None,
                 log: AuditLog) -> list[EpisodeRow]:
    """`episodes` randomized episodes per category; default, expert and (if given) the VLM on each."""
    env = CarInstructionEnv(CarTaskConfig(tracks=(track_name,), split="heldout", duration_s=duration_s, safety=SAFETY))
    expert, default = ScriptedCarExpert(), FixedParamsPolicy()
    track = load_track(track_name)
    rows: list[EpisodeRow] = []
    with progress_bar() as bar:
        task = bar.add_task("episodes", total=len(CATEGORIES) * episodes)
        for ci, cat in enumerate(CATEGORIES):
            for i in range(episodes):
                episode_seed = seed * 10_000 + ci * 100 + i
                _, info = env.reset(seed=episode_seed, options={"category": cat})
                obs = info["observation"]
                decision = expert.decide(obs)
                row = EpisodeRow(cat, info["instruction"], episode_seed, env.default_attempt(),
                                 env.evaluate(decision.action))
                frame = log.store_frame(obs.image) if obs.image is not None else None
                context = {"track": track_name, "seed": episode_seed, "category": cat}
                _log_decision(log, obs, default.decide(obs), row.default, frame, context, track, row.default)
                _log_decision(log, obs, decision, row.expert, frame, context, track, row.default)
                if vlm is not None:
                    answer = vlm.decide(obs)
                    row.vlm_status, row.vlm_thought = answer.parse_status, answer.thought
                    row.vlm = env.evaluate(answer.action, failed_parse=answer.parse_status.startswith("fallback"))
                    _log_decision(log, obs, answer, row.vlm, frame, context, track, row.default)
                rows.append(row)
                bar.advance(task)
    env.close()
    return rows


def shield_stress(track: str, episodes: int, steps: int, seed: int, log: AuditLog) -> list[dict]:
    """A reckless driver (random throttle and steering) with and without the shield."""
    results = []
    with progress_bar() as bar:
        task = bar.add_task("shield stress", total=2 * episodes)
        for shielded in (False, True):
            env = CarDriveEnv(CarDriveConfig(
                twin=CarTwinConfig(track=track, randomization=CAR_RANDOMIZATION, obstacles=OBSTACLES),
                max_steps=steps, safety=SAFETY, shield=shielded))
            rng = np.random.default_rng(seed)
            totals = {"collision": 0.0, "speed": 0.0, "lateral_accel": 0.0}
            interventions: dict[str, int] = {}
            done_steps = 0
            for ep in range(episodes):
                env.reset(seed=seed * 1000 + ep)
                episode_costs = {k: 0.0 for k in totals}
                done = False
                while not done:
                    action = np.array([rng.uniform(0.3, 1.0) * rng.choice([1, 1, 1, -1]), rng.uniform(-1, 1)],
                                      np.float32)
                    _, _, term, trunc, info = env.step(action)
                    done_steps += 1
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
                    context={"episode": ep, "steps": done_steps}))
                bar.advance(task)
            env.close()
            results.append({"shield": shielded, "episodes": episodes, "steps": done_steps,
                            "violations": totals, "interventions": sum(interventions.values()),
                            "by_reason": interventions})
    return results


def summarize(rows: list[EpisodeRow]) -> list[dict]:
    """Per category: mean error and improvement of each policy, crashes, interventions, failed parses."""
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


def _drives(row: EpisodeRow) -> list[tuple[Attempt, str, str]]:
    drives = [(row.default, "default", "o"), (row.expert, "expert", "s")]
    return drives + ([(row.vlm, "VLM", "^")] if row.vlm is not None else [])


def path_figure(row: EpisodeRow, track_name: str) -> plt.Figure:
    """One episode: each policy's path coloured by speed, its speed and its lateral offset over time."""
    track = load_track(track_name)
    left, right = track.boundaries()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    ax = axes[0]
    ax.plot(*left.T, color="0.3", lw=1)
    ax.plot(*right.T, color="0.3", lw=1)
    for attempt, _, marker in _drives(row):
        tr = attempt.trace
        sc = ax.scatter(tr["x"], tr["y"], c=tr["v"], cmap="viridis", s=6, marker=marker, vmin=-1.5, vmax=5)
    fig.colorbar(sc, ax=ax, label="speed (m/s)")
    ax.set_aspect("equal")
    ax.set_title("path (" + ", ".join(f"{m} {name}" for _, name, m in _drives(row)) + "),\ncoloured by speed")
    for attempt, name, _ in _drives(row):
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


def _tables(summary: list[dict], stress: list[dict]) -> list[Table]:
    has_vlm = "vlm_improvement" in summary[0]
    rows = [[s["category"], s["default_error"], s["expert_error"], f"{100 * s['improvement']:.1f} %",
             f"{s['default_crashes']}/{s['expert_crashes']}",
             f"{s['default_interventions']}/{s['expert_interventions']}",
             *((f"{100 * s['vlm_improvement']:.1f} %", s["vlm_parse_failures"]) if has_vlm else ())]
            for s in summary]
    rows.append(["adaptability", "", "", f"{100 * np.mean([s['improvement'] for s in summary]):.1f} %", "", "",
                 *((f"{100 * np.mean([s['vlm_improvement'] for s in summary]):.1f} %", "") if has_vlm else ())])
    follow = Table.of("Instruction following on a held-out track: default parameters, scripted expert"
                      + (" and the VLM agent" if has_vlm else "") + " (shield on)",
                      ["category", "default error", "expert error", "expert improvement", "crashes (def/exp)",
                       "interventions (def/exp)", *(("VLM improvement", "VLM failed parses") if has_vlm else ())],
                      rows)
    shield = Table.of("Shield stress test: a reckless driver, randomized world, two boxes, a slow zone",
                      ["shield", "steps", "collisions", "speed violations", "lat. accel. violations", "interventions"],
                      [["on" if r["shield"] else "off", r["steps"], int(r["violations"]["collision"]),
                        int(r["violations"]["speed"]), int(r["violations"]["lateral_accel"]), r["interventions"]]
                       for r in stress])
    return [follow, shield]


def drive_part(track: str, episodes: int, duration_s: float, stress_episodes: int, stress_steps: int, seed: int,
               vlm: Policy | None, log: AuditLog) -> Part:
    """Part 1: the instruction-following episodes and the shield stress test, logged into `log`."""
    rows = run_episodes(track, episodes, duration_s, seed, vlm, log)
    stress = shield_stress(track, stress_episodes, stress_steps, seed, log)
    summary = summarize(rows)

    def section(report: HtmlReport) -> None:
        report.text("Each episode draws a randomized world (friction, mass, actuation delay, sensor noise, colours) "
                    "and a held-out wording of an instruction. The default MPC parameters, the scripted expert and "
                    "the VLM agent tune the MPC for the same episode; improvement = (default error - error) / "
                    "default error, where a crash, a crawl or a reverse drive where forward progress was asked, "
                    "and a failed parse score -100 %. Every command passed the shield: a 2 m/s slow zone at "
                    "s = 20-32 m the MPC does not know of, lateral-acceleration and stopping-distance limits.")
        for cat in CATEGORIES:
            for row in [r for r in rows if r.category == cat][:1]:
                report.figure(path_figure(row, track), caption=f"{cat}, first episode. The VLM's chain of thought: "
                              f"\u201c{row.vlm_thought or '(no VLM)'}\u201d ({row.vlm_status or '-'})")
        report.table(["category", "instruction", "seed", "default error", "expert error", "expert improvement",
                      "VLM improvement", "VLM thought"],
                     [[r.category, r.instruction, r.seed, r.default.metrics["error"], r.expert.metrics["error"],
                       r.expert.improvement, r.vlm.improvement if r.vlm else "-", r.vlm_thought or "-"]
                      for r in rows])

    return Part("drive", "1. Twin, agent and shield", _tables(summary, stress),
                {"summary": summary, "shield_stress": stress,
                 "episodes": [{"category": r.category, "instruction": r.instruction, "seed": r.seed,
                               "default": r.default.metrics, "expert": r.expert.metrics,
                               "expert_improvement": r.expert.improvement,
                               **({"vlm": r.vlm.metrics, "vlm_improvement": r.vlm.improvement,
                                   "vlm_thought": r.vlm_thought, "vlm_status": r.vlm_status} if r.vlm else {})}
                              for r in rows]},
                section)
