"""Speed benchmark of the factory twin: control steps/s, inspection frames/s, env throughput.

Everything is measured in one run on this machine, so the ratios compare like with like.
A rate is the median over `--repeats` timed repeats; its spread is half the min-max range
as a percentage of the median (as in bench_car.py). Repeats are interleaved (bare, twin,
bare, guarded, bare, ...) so load from elsewhere on the machine hits all of them alike.

1. Steps/s at 20 Hz control (FactoryTwinConfig() defaults, no randomization: 12 physics
   substeps of 240 Hz a step) with parts flowing: before every step (untimed) each part
   awaiting a decision is decided, reject if part.spec.defective else accept, so the arm
   picks the rejects and the belt indexes (stops while a reject waits at the pick station).
     twin     FactoryTwin.step(FactoryCommand(arm_speed=0.6, belt_speed=0.2,
              release=twin.wants_release()))
     guarded  FactoryGuard.step(the same command) on a second twin: shield, counts, costs
     bare     the same physics work written directly against PyBullet on the timed twin's
              own client and bodies (so the scene, parts included, is identical): per step
              12 x (resetBasePositionAndOrientation + resetBaseVelocity of the belt,
              stepSimulation, resetJointState of the 7 arm joints), the person's
              resetBasePositionAndOrientation, and one getClosestPoints(person, arm, 4.0).
   The twins are deterministic, so each one's trajectory (belt speed applied, arm joints,
   person position at every step) is recorded once beforehand on a reference twin (one
   stepped directly, one through a guard). Each repeat saves a twin's state, runs a bare
   loop replaying the stretch that twin is about to drive, restores the state (untimed)
   and then runs the twin over that stretch: bare and twin start from the same parts in
   the same places, stop the belt at the same steps and move the arm along the same path.
   The guard changes the path (it slows or stops the arm when the person visits the cell,
   and the belt then waits longer for the arm), so the guarded twin is compared with a bare
   loop on its own path, not the unguarded one's. What the bare loop leaves out is the
   twin's own work: the feeder (creating part bodies), reading part positions and
   velocities, the pick sequence with its inverse kinematics, carrying a held part, the
   forward kinematics of the tool. Overhead = bare steps/s / twin steps/s (and bare on the
   guarded path / guarded), as a ratio of medians; the JSON also has the median of
   per-repeat (paired) ratios and per-step time percentiles. Simulated seconds per wall
   second = steps/s x 0.05 s.
2. Inspection frames/s: FactoryTwin.inspection_image() vs a bare getCameraImage
   (TinyRenderer, view and projection computed once, the twin's lighting) at 64x64 and
   128x128, from the same overhead view; each repeat renders while a part sits under the
   camera (the line is run between repeats until the next one arrives). The images are
   compared to check that the bare call renders the same picture. As a diagnosis, the bare
   call is timed again on the same scene with the Panda arm removed (it is never in view).
3. Env throughput, default FactoryTaskConfig (randomized cell, shield on):
   FactoryInspectionEnv.step decisions/s under the expert rule (reject iff
   info["observation"].privileged["defective"]), with the line-seconds it ran, and
   FactoryLineEnv.step (one line-second a step; belt 0.2 m/s, arm 0.6 m/s; its default
   inspector) as line-seconds per wall second. Only step() is timed, not reset(); episodes
   that end are reset with the next seed.

Results are printed as rich tables with PASS/MISS against the targets (never asserted)
and written as JSON (default benchmarks/results/factory.json).
"""

from __future__ import annotations

import os

# One thread for numeric libraries, set before numpy is imported (as in bench_car.py).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any

import numpy as np  # noqa: E402
import pybullet as pb  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

# The project is not installed as a package; running this file puts benchmarks/ on the
# path, not the repository root.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.tasks.factory.envs import FactoryInspectionEnv, FactoryLineEnv, FactoryTaskConfig  # noqa: E402
from benchmarks.bench_car import machine_info, quiet_stdout, summarize  # noqa: E402
from safety.factory.guard import FactoryGuard  # noqa: E402
from twin.core.sensors import CameraParams, LightingParams  # noqa: E402
from twin.factory.arm import JOINTS  # noqa: E402
from twin.factory.command import FactoryCommand  # noqa: E402
from twin.factory.params import FactoryParams  # noqa: E402
from twin.factory.twin import FactoryTwin, FactoryTwinConfig  # noqa: E402
from twin.factory.world import INSPECT_X  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "factory.json"
CONTROL_HZ = 20.0
ARM_SPEED = 0.6
"""Commanded arm tool speed (m/s)."""
BELT_SPEED = 0.2
"""Commanded belt speed (m/s)."""

TARGETS = {"twin_overhead_max": 1.3, "camera64_fps_min": 250.0}


# -- helpers ------------------------------------------------------------------------------
def twin_config(size: int = 64) -> FactoryTwinConfig:
    """Default cell (no randomization) at 20 Hz, its inspection camera at size x size."""
    params = FactoryParams()
    params = dataclasses.replace(params, camera=dataclasses.replace(params.camera, width=size, height=size))
    return FactoryTwinConfig(control_hz=CONTROL_HZ, params=params)


def make_twin(config: FactoryTwinConfig) -> FactoryTwin:
    with quiet_stdout():
        twin = FactoryTwin(config)
    twin.reset(np.random.default_rng(0))
    return twin


def decide_expert(twin: FactoryTwin) -> None:
    """Decide every awaiting part from ground truth, so the arm picks the rejects."""
    for part in twin.awaiting():
        twin.decide(part.id, "reject" if part.spec.defective else "accept")


def command(twin: FactoryTwin) -> FactoryCommand:
    return FactoryCommand(arm_speed=ARM_SPEED, belt_speed=BELT_SPEED, release=twin.wants_release())


@dataclasses.dataclass
class Trajectory:
    """What the twin did at each control step: belt speed applied, arm joints, person (x, y)."""

    belt: list[float] = dataclasses.field(default_factory=list)
    q: list[tuple[float, ...]] = dataclasses.field(default_factory=list)
    person: list[tuple[float, float]] = dataclasses.field(default_factory=list)

    def add(self, twin: FactoryTwin, belt_speed: float) -> None:
        self.belt.append(float(belt_speed))
        self.q.append(tuple(float(v) for v in twin.arm.q))
        self.person.append((float(twin.person.pos[0]), float(twin.person.pos[1])))

    def slice(self, lo: int, hi: int) -> Trajectory:
        return Trajectory(self.belt[lo:hi], self.q[lo:hi], self.person[lo:hi])


def record_trajectory(n: int, guarded: bool) -> tuple[Trajectory, dict[str, float]]:
    """A reference twin's trajectory over n steps under the expert rule (and its counters),
    stepped directly or through a FactoryGuard."""
    twin = make_twin(twin_config())
    guard = FactoryGuard(twin) if guarded else None
    traj = Trajectory()
    for _ in range(n):
        decide_expert(twin)
        report = guard.step(command(twin))[1] if guard is not None else twin.step(command(twin))
        traj.add(twin, report.belt_speed)
    counters = dict(twin.counters)
    twin.close()
    return traj, counters


# -- the bare PyBullet loop -----------------------------------------------------------------
class BareLoop:
    """One control step's physics work done with plain PyBullet calls on an existing scene."""

    def __init__(self, twin: FactoryTwin) -> None:
        scene = twin.scene
        self.client = twin.c
        self.belt, self.belt_pos = scene.belt, list(scene.belt_pos)
        self.arm, self.person = scene.arm, scene.person
        self.substeps = twin.config.substeps
        self.joints = JOINTS

    def run(self, traj: Trajectory) -> float:
        """Steps/s replaying `traj`; the caller saves and restores the scene around it."""
        c, belt, belt_pos, arm, person = self.client, self.belt, self.belt_pos, self.arm, self.person
        joints, substeps = self.joints, self.substeps
        identity = [0.0, 0.0, 0.0, 1.0]
        zero = [0.0, 0.0, 0.0]
        t0 = time.perf_counter()
        for speed, q, (px, py) in zip(traj.belt, traj.q, traj.person):
            for _ in range(substeps):
                c.resetBasePositionAndOrientation(belt, belt_pos, identity)
                c.resetBaseVelocity(belt, [speed, 0.0, 0.0], zero)
                c.stepSimulation()
                for j, v in zip(joints, q):
                    c.resetJointState(arm, j, v)
            c.resetBasePositionAndOrientation(person, [px, py, 0.85], identity)
            c.getClosestPoints(person, arm, 4.0)
        return len(traj.belt) / (time.perf_counter() - t0)


def run_bare(bare: BareLoop, traj: Trajectory) -> float:
    """Bare steps/s over `traj` from the twin's current state, which is restored afterwards."""
    c = bare.client
    state = c.saveState()
    try:
        return bare.run(traj)
    finally:
        c.restoreState(stateId=state)
        c.removeState(state)


# -- 1. steps/s ----------------------------------------------------------------------------
def run_twin(twin: FactoryTwin, n: int, traj: Trajectory | None = None) -> tuple[float, list[int]]:
    """(steps/s of FactoryTwin.step over n steps, ns per step); the expert and the command are not timed."""
    clock = time.perf_counter_ns
    times = []
    for _ in range(n):
        decide_expert(twin)
        cmd = command(twin)
        t0 = clock()
        report = twin.step(cmd)
        times.append(clock() - t0)
        if traj is not None:
            traj.add(twin, report.belt_speed)
    return n / (sum(times) / 1e9), times


def run_guarded(guard: FactoryGuard, n: int, traj: Trajectory | None = None) -> tuple[float, list[int], int]:
    """(steps/s of FactoryGuard.step over n steps, ns per step, interventions)."""
    clock = time.perf_counter_ns
    twin = guard.twin
    times, intervened = [], 0
    for _ in range(n):
        decide_expert(twin)
        cmd = command(twin)
        t0 = clock()
        verdict, report, _ = guard.step(cmd)
        times.append(clock() - t0)
        intervened += int(verdict.intervened)
        if traj is not None:
            traj.add(twin, report.belt_speed)
    return n / (sum(times) / 1e9), times, intervened


def deviation(followed: Trajectory, reference: Trajectory) -> dict[str, float]:
    """How far a timed twin left the reference path its bare loop replayed (0: not at all)."""
    n = len(followed.q)
    return {"max_joint_deviation_rad": float(np.max(np.abs(np.asarray(followed.q) - np.asarray(reference.q[:n])))),
            "belt_speed_match_frac": float(np.mean(np.isclose(followed.belt, reference.belt[:n])))}


def step_percentiles_ms(ns: Sequence[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=float) / 1e6
    return {"p50": float(np.median(a)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "steps": int(len(a))}


def bench_steps(steps: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Twin, guarded and bare steps/s, repeats interleaved on successive stretches of the line."""
    n = warmup + repeats * steps
    refs = {"twin": record_trajectory(n, guarded=False), "guarded": record_trajectory(n, guarded=True)}
    twin = make_twin(twin_config())
    gtwin = make_twin(twin_config())
    guard = FactoryGuard(gtwin)
    guard.reset()
    bares = {"twin": BareLoop(twin), "guarded": BareLoop(gtwin)}
    # Warm-up: the line fills with parts (a part takes ~6.5 s from the feeder to the pick station).
    followed = {"twin": Trajectory(), "guarded": Trajectory()}
    run_twin(twin, warmup, followed["twin"])
    run_guarded(guard, warmup, followed["guarded"])
    for k, bare in bares.items():
        run_bare(bare, refs[k][0].slice(warmup, warmup + min(steps, 50)))
    rates: dict[str, list[float]] = {"twin": [], "guarded": [], "bare": [], "bare_guarded": []}
    pooled: dict[str, list[int]] = {"twin": [], "guarded": []}
    interventions = 0
    parts_on_belt = []
    for r in range(repeats):
        lo, hi = warmup + r * steps, warmup + (r + 1) * steps
        parts_on_belt.append(sum(p.status == "belt" and p.body is not None for p in twin.parts.values()))
        rates["bare"].append(run_bare(bares["twin"], refs["twin"][0].slice(lo, hi)))
        rate, ns = run_twin(twin, steps, followed["twin"])
        rates["twin"].append(rate)
        pooled["twin"].extend(ns)
        rates["bare_guarded"].append(run_bare(bares["guarded"], refs["guarded"][0].slice(lo, hi)))
        rate, ns, k = run_guarded(guard, steps, followed["guarded"])
        rates["guarded"].append(rate)
        pooled["guarded"].extend(ns)
        interventions += k
    dt = 1.0 / CONTROL_HZ
    timed = slice(warmup, None)
    out: dict[str, Any] = {
        "control_hz": CONTROL_HZ, "substeps": twin.config.substeps, "steps_per_repeat": steps,
        "arm_speed": ARM_SPEED, "belt_speed": BELT_SPEED,
        "twin_counters": dict(twin.counters), "guarded_counters": dict(gtwin.counters),
        "guard_interventions": interventions, "guard_intervened_frac": interventions / (repeats * steps),
        "parts_on_belt_at_repeat_start": parts_on_belt,
        # Did restoring the saved state leave each twin on the reference path its bare loop replayed?
        "bare_replay": {k: deviation(followed[k], refs[k][0]) for k in followed},
        "belt_stopped_frac": {k: float(np.mean(np.asarray(refs[k][0].belt[timed]) == 0.0)) for k in refs},
    }
    twin.close()
    gtwin.close()
    out.update({k: summarize(v) for k, v in rates.items()})
    out["step_ms"] = {k: step_percentiles_ms(v) for k, v in pooled.items()}
    out["sim_s_per_wall_s"] = {k: out[k]["median"] * dt for k in rates}
    out["overhead_twin"] = out["bare"]["median"] / out["twin"]["median"]
    out["overhead_guarded"] = out["bare_guarded"]["median"] / out["guarded"]["median"]
    out["overhead_twin_paired"] = summarize(np.divide(rates["bare"], rates["twin"]))
    out["overhead_guarded_paired"] = summarize(np.divide(rates["bare_guarded"], rates["guarded"]))
    return out


# -- 2. inspection frames/s ----------------------------------------------------------------
class BareCamera:
    """The twin's overhead inspection camera written directly against PyBullet (no noise, same view)."""

    def __init__(self, client: Any, cam: CameraParams, light: LightingParams) -> None:
        self.client = client
        self.w, self.h = int(cam.width), int(cam.height)
        eye = (INSPECT_X, 0.0, cam.mount_height)
        heading, pitch = math.radians(cam.yaw_deg), math.radians(cam.pitch_deg)
        target = (eye[0] + math.cos(heading) * math.cos(pitch), eye[1] + math.sin(heading) * math.cos(pitch),
                  eye[2] + math.sin(pitch))
        # The camera is fixed: a hand-written loop computes its matrices once.
        self.view = client.computeViewMatrix(eye, target, (0.0, 0.0, 1.0))
        self.proj = client.computeProjectionMatrixFOV(cam.fov_deg, self.w / self.h, 0.03, cam.far)
        az, el = math.radians(light.azimuth_deg), math.radians(light.elevation_deg)
        self.light_dir = (math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el))
        self.light = light

    def render(self) -> np.ndarray:
        img = self.client.getCameraImage(
            self.w, self.h, self.view, self.proj,
            lightDirection=self.light_dir, lightAmbientCoeff=self.light.ambient,
            lightDiffuseCoeff=self.light.diffuse, lightSpecularCoeff=self.light.specular,
            shadow=0, renderer=pb.ER_TINY_RENDERER,
        )
        return np.asarray(img[2], dtype=np.uint8).reshape(self.h, self.w, 4)[:, :, :3]


def advance_to_part(twin: FactoryTwin, limit_steps: int = 400) -> bool:
    """Run the line (expert deciding) until a part awaits at the inspection line; True if one came."""
    for _ in range(limit_steps):
        decide_expert(twin)
        twin.step(command(twin))
        if twin.awaiting():
            return True
    return False


def time_frames(render: Callable[[], np.ndarray], frames: int) -> tuple[float, np.ndarray]:
    img = render()  # warm-up, and the image to compare
    t0 = time.perf_counter()
    for _ in range(frames):
        render()
    return frames / (time.perf_counter() - t0), img


def bench_camera(size: int, frames: int, repeats: int) -> dict[str, Any]:
    """inspection_image() vs bare getCameraImage at size x size, a part under the camera each repeat."""
    twin = make_twin(twin_config(size))
    bare = BareCamera(twin.c, twin.params.camera, twin.params.lighting)
    rates: dict[str, list[float]] = {"twin": [], "bare": [], "bare_no_arm": []}
    same, part_in_view = True, 0
    for _ in range(repeats):
        part_in_view += int(advance_to_part(twin))
        rate, ref = time_frames(twin.inspection_image, frames)
        rates["twin"].append(rate)
        rate, img = time_frames(bare.render, frames)
        rates["bare"].append(rate)
        same = same and bool(np.array_equal(ref, img))
    # Diagnosis: the same view of the same scene without the arm (the twin is not stepped again).
    twin.c.removeBody(twin.scene.arm)
    no_arm_frames = frames * 4
    for _ in range(repeats):
        rate, img_no_arm = time_frames(bare.render, no_arm_frames)
        rates["bare_no_arm"].append(rate)
    twin.close()
    out: dict[str, Any] = {"size": size, "frames_per_repeat": frames, "frames_per_repeat_no_arm": no_arm_frames,
                           "images_identical": same, "no_arm_image_identical": bool(np.array_equal(img, img_no_arm)),
                           "repeats_with_part_in_view": part_in_view}
    out.update({k: summarize(v) for k, v in rates.items()})
    out["overhead"] = out["bare"]["median"] / out["twin"]["median"]
    out["arm_cost_factor"] = out["bare_no_arm"]["median"] / out["bare"]["median"]
    return out


# -- 3. env throughput ---------------------------------------------------------------------
def bench_inspection_env(decisions: int, repeats: int) -> dict[str, Any]:
    """FactoryInspectionEnv.step decisions/s (and line-seconds/s) under the expert rule."""
    with quiet_stdout():
        env = FactoryInspectionEnv(FactoryTaskConfig())
    seed = 0
    _, info = env.reset(seed=seed)
    rates: dict[str, list[float]] = {"decisions": [], "line_s": []}
    correct = total = episodes = 0
    accuracies = []
    clock = time.perf_counter

    def one(timed: bool) -> tuple[float, float]:
        nonlocal info, seed, correct, total, episodes
        action = 1 if info["observation"].privileged["defective"] else 0
        t_before = env.twin.t
        t0 = clock()
        _, _, terminated, truncated, info = env.step(action)
        busy = clock() - t0
        line = env.twin.t - t_before
        if timed:
            correct += int(info["reward_terms"]["correct"] > 0)
            total += 1
        if terminated or truncated:
            if timed:
                episodes += 1
                accuracies.append(info["metrics"]["accuracy"])
            seed += 1
            _, info = env.reset(seed=seed)
        return busy, line

    one(False)  # warm-up
    for _ in range(repeats):
        busy = line = 0.0
        for _ in range(decisions):
            b, s = one(True)
            busy += b
            line += s
        rates["decisions"].append(decisions / busy)
        rates["line_s"].append(line / busy)
    env.close()
    out: dict[str, Any] = {"decisions_per_repeat": decisions, "parts_per_episode": env.config.parts_per_episode,
                           "episodes_finished": episodes, "decision_correct_frac": correct / max(total, 1),
                           "episode_accuracy_mean": float(np.nanmean(accuracies)) if accuracies else None}
    out.update({k: summarize(v) for k, v in rates.items()})
    return out


def bench_line_env(steps: int, repeats: int) -> dict[str, Any]:
    """FactoryLineEnv.step line-seconds per wall second at belt 0.2 m/s, arm 0.6 m/s."""
    with quiet_stdout():
        env = FactoryLineEnv(FactoryTaskConfig())
    sp = env.config.safety
    action = np.array([2 * BELT_SPEED / sp.belt_speed_max - 1, 2 * ARM_SPEED / sp.arm_speed_max - 1], np.float32)
    seed = 0
    env.reset(seed=seed)
    rates: list[float] = []
    reward = 0.0
    interventions = 0.0
    clock = time.perf_counter
    env.step(action)  # warm-up
    for _ in range(repeats):
        busy = line = 0.0
        for _ in range(steps):
            t_before = env.twin.t
            t0 = clock()
            _, r, terminated, truncated, info = env.step(action)
            busy += clock() - t0
            line += env.twin.t - t_before
            reward += r
            if terminated or truncated:
                interventions += info["metrics"]["shield_interventions"]
                seed += 1
                env.reset(seed=seed)
        rates.append(line / busy)
    interventions += env.guard.counter.interventions
    env.close()
    out: dict[str, Any] = {"steps_per_repeat": steps, "line_seconds_per_step": 1.0, "action": action.tolist(),
                           "reward_sum": reward, "shield_interventions": interventions}
    out["line_s"] = summarize(rates)
    return out


# -- reporting -----------------------------------------------------------------------------
def evaluate_targets(steps: dict[str, Any], cams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per target: what was measured, the threshold, and whether it was met."""
    limit = TARGETS["twin_overhead_max"]
    rows = [
        {"target": "twin overhead (bare/twin steps/s)", "value": steps["overhead_twin"],
         "threshold": f"<= {limit}", "pass": steps["overhead_twin"] <= limit},
        {"target": "guarded twin overhead (bare/guarded steps/s)", "value": steps["overhead_guarded"],
         "threshold": f"<= {limit}", "pass": steps["overhead_guarded"] <= limit},
    ]
    cam64 = next(c for c in cams if c["size"] == 64)
    fps = TARGETS["camera64_fps_min"]
    rows.append({"target": "inspection_image() 64x64 frames/s", "value": cam64["twin"]["median"],
                 "threshold": f">= {fps:g}", "pass": cam64["twin"]["median"] >= fps})
    return rows


def _rate(s: dict[str, Any], digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f} ±{s['spread_pct']:.0f}%"


def _verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]MISS[/red]"


def print_report(console: Console, result: dict[str, Any]) -> None:
    st = result["steps"]
    t = Table(title=f"Control steps/s at {st['control_hz']:g} Hz ({st['substeps']} substeps of 240 Hz), "
                    f"{result['settings']['repeats']} x {st['steps_per_repeat']} steps, median ±half-range")
    for col in ("loop", "steps/s", "sim s / wall s", "step p50 ms", "p99 ms", "max ms", "bare/this (paired)"):
        t.add_column(col, justify="left" if col == "loop" else "right")
    rows = (("FactoryTwin.step", "twin", "overhead_twin"),
            ("bare PyBullet, twin's path", "bare", None),
            ("FactoryGuard.step (shield + costs)", "guarded", "overhead_guarded"),
            ("bare PyBullet, guarded twin's path", "bare_guarded", None))
    for label, k, ratio_key in rows:
        ms = st["step_ms"].get(k)
        ratio = f"{st[ratio_key]:.2f}x ({st[ratio_key + '_paired']['median']:.2f})" if ratio_key else "-"
        t.add_row(label, _rate(st[k]), f"{st['sim_s_per_wall_s'][k]:.1f}",
                  f"{ms['p50']:.2f}" if ms else "-", f"{ms['p99']:.2f}" if ms else "-",
                  f"{ms['max']:.1f}" if ms else "-", ratio)
    console.print(t)
    tc, stopped, replay = st["twin_counters"], st["belt_stopped_frac"], st["bare_replay"]
    console.print(f"twin over the run: {tc['spawned']:.0f} parts spawned, {tc['binned']:.0f} binned, "
                  f"{tc['grasp_failures']:.0f} grasp failures; parts on the belt at repeat starts "
                  f"{st['parts_on_belt_at_repeat_start']}; belt stopped in {100 * stopped['twin']:.0f}% of steps "
                  f"(guarded: {100 * stopped['guarded']:.0f}%); guard intervened in "
                  f"{100 * st['guard_intervened_frac']:.1f}% of steps; after each bare replay the twins left the "
                  f"recorded path by {max(v['max_joint_deviation_rad'] for v in replay.values()):.2g} rad at most")

    t = Table(title="Inspection camera frames/s (TinyRenderer), part under the camera")
    for col in ("size", "inspection_image()", "bare getCameraImage", "bare/twin", "same image",
                "bare, arm removed", "arm costs"):
        t.add_column(col, justify="right")
    for c in result["camera"]:
        t.add_row(f"{c['size']}x{c['size']}", _rate(c["twin"]), _rate(c["bare"]), f"{c['overhead']:.2f}x",
                  "yes" if c["images_identical"] else "[red]no[/red]", _rate(c["bare_no_arm"]),
                  f"{c['arm_cost_factor']:.1f}x")
    console.print(t)

    ins, line = result["env"]["inspection"], result["env"]["line"]
    t = Table(title="Env throughput (randomized cell, shield on), median ±half-range")
    for col in ("env", "per repeat", "rate", "line s / wall s", "notes"):
        t.add_column(col, justify="left" if col in ("env", "notes") else "right")
    acc = ins["episode_accuracy_mean"]
    t.add_row("FactoryInspectionEnv.step (expert)", f"{ins['decisions_per_repeat']} decisions",
              f"{_rate(ins['decisions'], 1)} decisions/s",
              _rate(ins["line_s"], 1),
              f"{100 * ins['decision_correct_frac']:.0f}% decisions correct; {ins['episodes_finished']} episodes"
              + (f", accuracy {acc:.2f}" if acc is not None else ""))
    t.add_row("FactoryLineEnv.step (belt 0.2, arm 0.6)", f"{line['steps_per_repeat']} steps",
              f"{_rate(line['line_s'], 1)} steps/s", _rate(line["line_s"], 1),
              f"reward {line['reward_sum']:.0f}, {line['shield_interventions']:.0f} interventions")
    console.print(t)

    t = Table(title="Targets")
    for col in ("target", "value", "threshold", "result"):
        t.add_column(col, justify="right" if col != "target" else "left")
    for row in result["targets"]:
        v = row["value"]
        t.add_row(row["target"], f"{v:.2f}" if v < 100 else f"{v:,.0f}", row["threshold"], _verdict(row["pass"]))
    console.print(t)


# -- main ----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few steps and repeats: a smoke test, not a measurement")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 5, quick 3)")
    ap.add_argument("--steps", type=int, default=None, help="control steps per repeat (default 400, quick 60)")
    ap.add_argument("--frames", type=int, default=None, help="camera frames per repeat (default 60, quick 10)")
    args = ap.parse_args(argv)

    repeats = args.repeats or (3 if args.quick else 5)
    steps = args.steps or (60 if args.quick else 400)
    warmup = 100 if args.quick else 300
    frames = args.frames or (10 if args.quick else 60)
    decisions = 4 if args.quick else 16
    line_steps = 4 if args.quick else 20
    # Rich falls back to 80 columns when piped, which wraps the tables; logs are usually piped.
    console = Console(width=None if sys.stdout.isatty() else 140)
    progress: Callable[[str], None] = lambda msg: console.log(msg)  # noqa: E731

    started = time.perf_counter()
    progress(f"steps/s: reference trajectory, then {repeats} x {steps} steps each (+{warmup} warm-up)")
    step_result = bench_steps(steps, repeats, warmup)
    cam_results = []
    for size in (64, 128):
        progress(f"inspection camera: {size}x{size}, {repeats} x {frames} frames")
        cam_results.append(bench_camera(size, frames, repeats))
    progress(f"FactoryInspectionEnv: {repeats} x {decisions} decisions")
    inspection = bench_inspection_env(decisions, repeats)
    progress(f"FactoryLineEnv: {repeats} x {line_steps} line-seconds")
    line = bench_line_env(line_steps, repeats)

    result: dict[str, Any] = {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"quick": args.quick, "repeats": repeats, "steps_per_repeat": steps, "warmup_steps": warmup,
                     "camera_frames_per_repeat": frames, "inspection_decisions_per_repeat": decisions,
                     "line_steps_per_repeat": line_steps, "control_hz": CONTROL_HZ, "physics_hz": 240.0,
                     "arm_speed": ARM_SPEED, "belt_speed": BELT_SPEED,
                     "twin_config": "FactoryTwinConfig(control_hz=20) defaults, no randomization, seed 0",
                     "env_config": "FactoryTaskConfig() defaults (randomized, shield on)", "threads": 1},
        "steps": step_result,
        "camera": cam_results,
        "env": {"inspection": inspection, "line": line},
        "targets_spec": TARGETS,
    }
    result["targets"] = evaluate_targets(step_result, cam_results)
    result["wall_time_s"] = time.perf_counter() - started

    print_report(console, result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out} ({result['wall_time_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
