"""Speed benchmark of the car twin: control steps/s, camera frames/s, MPC solve time.

Everything is measured in one run on this machine, so the ratios compare like with like.
A rate is the median over `--repeats` timed repeats; its spread is half the min-max range
as a percentage of the median. Repeats are interleaved (twin, env, bare, twin, ...) so load
from elsewhere on the machine hits all three alike; the spread also holds where on the track
each repeat drove, since ray and render costs depend on the view.

1. Steps/s at 50 Hz control (CarTwinConfig(control_hz=50, physics_dt=0.01): 2 physics
   substeps a step) for lidar on/off x camera (64x64) on/off, measured three ways:
     twin  CarTwin.step(Command) + CarTwin.sense()
     env   CarDriveEnv.step(action) with the same twin config (lidar_stride=1)
     bare  the same work written directly against PyBullet on the twin's own client and
           bodies (so the scene is identical): 2 RK4 substeps of twin.vehicle.integrate
           with fixed inputs, resetBasePositionAndOrientation of the car,
           getClosestPoints(car, walls, 0), and when on one rayTestBatch of the same 1080
           rays (numThreads=1) with the hit fractions put into numpy, and one
           getCameraImage(64, 64, TinyRenderer) with the twin's view and lighting.
   Overhead = bare steps/s / twin steps/s (and / env steps/s), as a ratio of medians; the
   JSON also has the median of per-repeat (paired) ratios. Without sensors a step is so
   cheap that that config runs 10x the steps per repeat.
   The car drives at 2 m/s under a small Frenet feedback law (steer = -1.5 d - 1.0 alpha);
   only the measured calls are timed, not the law. The trajectory is recorded once
   beforehand and the bare loop starts each step from the state the twin had at that step,
   so all three see the same views and ray geometry (the model is deterministic: no
   randomization is configured, sensor noise does not feed back into the motion).
2. Camera frames/s: twin.camera() vs the bare getCameraImage at 64x64 and 128x128, from
   the same pose (one pose per repeat, spread around the track); the images are compared
   to check that the bare loop renders the same picture.
3. MPC solve time: agents.control.loop.drive on the 'oval' at 20 Hz, horizon 40, for
   ~20 s simulated; p50/p99/max of Trace.mpc_solve_times against the 50 ms period.

Results are printed as rich tables with PASS/MISS against the targets (never asserted)
and written as JSON (default benchmarks/results/car.json).
"""

from __future__ import annotations

import os

# One thread for numeric libraries, set before numpy is imported: the twin is meant to run
# one env per core, and BLAS threads would make timings depend on the machine's idle cores.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
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

from agents.control.loop import drive  # noqa: E402
from agents.control.mpc import FrenetMPC, MPCConfig  # noqa: E402
from agents.control.mpc_params import DEFAULT  # noqa: E402
from agents.tasks.car.drive_env import CarDriveConfig, CarDriveEnv  # noqa: E402
from twin.car import vehicle  # noqa: E402
from twin.car.actuation import Command  # noqa: E402
from twin.car.twin import CarParams, CarTwin, CarTwinConfig  # noqa: E402
from twin.car.world import BODY_HEIGHT  # noqa: E402
from twin.core.bullet import quiet_stdout  # noqa: E402
from twin.core.sensors import CameraParams, LidarParams, LightingParams  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "car.json"
SPEED_CMD = 2.0
"""Commanded speed (m/s): gentle enough that the feedback law keeps the car on the track."""
STEER_LIMIT = 0.4

TARGETS = {
    "twin_overhead_max": 1.3,
    "env_steps_per_s_lidar_min": 1000.0,
    "camera64_fps_min": 250.0,
    "mpc_p99_below_period": True,
}


# -- helpers ------------------------------------------------------------------------------
def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and spread (half range, % of median) of repeated measurements."""
    a = np.asarray(samples, dtype=float)
    med = float(np.median(a))
    return {
        "median": med,
        "min": float(a.min()),
        "max": float(a.max()),
        "spread_pct": float(50.0 * (a.max() - a.min()) / med) if med > 0 else 0.0,
        "samples": [float(x) for x in a],
    }


def feedback_command(d: float, alpha: float) -> tuple[float, float]:
    """(speed, steer) of the simple Frenet law that keeps the car near the centerline."""
    steer = max(-STEER_LIMIT, min(STEER_LIMIT, 1.5 * (-d) - 1.0 * alpha))
    return SPEED_CMD, steer


def twin_config(lidar: bool, camera: bool, size: int = 64, control_hz: float = 50.0) -> CarTwinConfig:
    params = CarParams(camera=CameraParams(width=size, height=size))
    return CarTwinConfig(track="oval", control_hz=control_hz, physics_dt=0.01, lidar=lidar, camera=camera,
                         params=params)


def make_twin(config: CarTwinConfig) -> CarTwin:
    with quiet_stdout():
        twin = CarTwin(config)
    twin.reset(np.random.default_rng(0))
    return twin


# -- the bare PyBullet loop -----------------------------------------------------------------
class BareCamera:
    """The twin's front camera written directly against PyBullet (no noise, same view)."""

    def __init__(self, client: Any, cam: CameraParams, light: LightingParams) -> None:
        self.client = client
        self.cam = cam
        self.w, self.h = int(cam.width), int(cam.height)
        # Constant per camera, so a hand-written loop would compute it once.
        self.proj = client.computeProjectionMatrixFOV(cam.fov_deg, self.w / self.h, 0.03, cam.far)
        az, el = math.radians(light.azimuth_deg), math.radians(light.elevation_deg)
        self.light_dir = (math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el))
        self.light = light

    def render(self, x: float, y: float, yaw: float) -> np.ndarray:
        cam = self.cam
        eye = (x + cam.mount_forward * math.cos(yaw), y + cam.mount_forward * math.sin(yaw), cam.mount_height)
        heading, pitch = yaw + math.radians(cam.yaw_deg), math.radians(cam.pitch_deg)
        target = (eye[0] + math.cos(heading) * math.cos(pitch), eye[1] + math.sin(heading) * math.cos(pitch),
                  eye[2] + math.sin(pitch))
        view = self.client.computeViewMatrix(eye, target, (0.0, 0.0, 1.0))
        img = self.client.getCameraImage(
            self.w, self.h, view, self.proj,
            lightDirection=self.light_dir, lightAmbientCoeff=self.light.ambient,
            lightDiffuseCoeff=self.light.diffuse, lightSpecularCoeff=self.light.specular,
            shadow=0, renderer=pb.ER_TINY_RENDERER,
        )
        return np.asarray(img[2], dtype=np.uint8).reshape(self.h, self.w, 4)[:, :, :3]


class BareLoop:
    """One control step's work done with plain PyBullet calls on an existing CarWorld."""

    def __init__(self, twin: CarTwin) -> None:
        world, p = twin.world, twin.params
        self.client, self.car, self.walls = world.client, world.car, world.walls
        self.veh = p.vehicle
        self.mu = p.vehicle.mu
        self.dt = twin.config.physics_dt
        self.substeps = twin.config.substeps
        self.lidar_on, self.camera_on = twin.config.lidar, twin.config.camera
        lp: LidarParams = p.lidar
        self.angles = np.linspace(-lp.fov / 2, lp.fov / 2, int(lp.beams))
        self.max_range, self.ray_z = lp.max_range, lp.mount_height
        self.ray_from = np.zeros((len(self.angles), 3))
        self.ray_to = np.zeros((len(self.angles), 3))
        self.camera = BareCamera(self.client, p.camera, p.lighting)

    def step(self, start: vehicle.VehicleState) -> None:
        vs = start
        for _ in range(self.substeps):  # fixed inputs: the model's cost, not its control
            vs = vehicle.integrate(self.veh, self.mu, vs, 0.0, 0.0, self.dt)
        c = self.client
        c.resetBasePositionAndOrientation(
            self.car, [vs.x, vs.y, BODY_HEIGHT / 2 + 0.01], [0.0, 0.0, math.sin(vs.yaw / 2), math.cos(vs.yaw / 2)]
        )
        c.getClosestPoints(self.car, self.walls, 0.0)
        if self.lidar_on:
            ang = self.angles + vs.yaw
            self.ray_from[:, 0], self.ray_from[:, 1], self.ray_from[:, 2] = vs.x, vs.y, self.ray_z
            self.ray_to[:, 0] = vs.x + self.max_range * np.cos(ang)
            self.ray_to[:, 1] = vs.y + self.max_range * np.sin(ang)
            self.ray_to[:, 2] = self.ray_z
            hits = c.rayTestBatch(self.ray_from, self.ray_to, numThreads=1)
            np.fromiter((h[2] for h in hits), dtype=np.float64, count=len(hits))
        if self.camera_on:
            self.camera.render(vs.x, vs.y, vs.yaw)

    def run(self, states: Sequence[vehicle.VehicleState]) -> float:
        """Steps/s over `states` (each step starts from the twin's recorded state)."""
        t0 = time.perf_counter()
        for st in states:
            self.step(st)
        return len(states) / (time.perf_counter() - t0)


# -- 1. steps/s ----------------------------------------------------------------------------
def record_states(n: int) -> list[vehicle.VehicleState]:
    """The twin's state at the start of each of n control steps under the feedback law."""
    twin = make_twin(twin_config(lidar=False, camera=False))
    states = []
    for _ in range(n):
        states.append(dataclasses.replace(twin.vs))
        st = twin.state
        twin.step(Command(*feedback_command(st.d, st.alpha)))
        if twin.crashed:
            twin.reset(np.random.default_rng(0))
    twin.close()
    return states


def run_twin(twin: CarTwin, n: int) -> tuple[float, int]:
    """(steps/s of step + sense over n steps, crashes); the law and resets are not timed."""
    busy, crashes = 0.0, 0
    clock = time.perf_counter
    for _ in range(n):
        st = twin.state
        cmd = Command(*feedback_command(st.d, st.alpha))
        t0 = clock()
        twin.step(cmd)
        twin.sense()
        busy += clock() - t0
        if twin.crashed:
            crashes += 1
            twin.reset(np.random.default_rng(0))
    return n / busy, crashes


def run_env(env: CarDriveEnv, n: int) -> tuple[float, int]:
    """(steps/s of env.step over n steps, crashes); the law and resets are not timed."""
    busy, crashes = 0.0, 0
    clock = time.perf_counter
    scale, steer_max = env.config.speed_scale, env.twin.params.vehicle.steer_max
    for _ in range(n):
        st = env.twin.state
        speed, steer = feedback_command(st.d, st.alpha)
        action = np.array([speed / scale, steer / steer_max], dtype=np.float32)
        t0 = clock()
        _, _, terminated, truncated, _ = env.step(action)
        busy += clock() - t0
        if terminated or truncated:
            crashes += int(terminated)
            env.reset(seed=0)
    return n / busy, crashes


def bench_steps(lidar: bool, camera: bool, states: list[vehicle.VehicleState], steps: int, repeats: int,
                warmup: int) -> dict[str, Any]:
    """Twin, env and bare steps/s for one sensor config, repeats interleaved so drift hits all three."""
    cfg = twin_config(lidar, camera)
    twin = make_twin(cfg)
    with quiet_stdout():
        env = CarDriveEnv(CarDriveConfig(twin=cfg, max_steps=10_000_000, lidar_stride=1))
    env.reset(seed=0)
    bare = BareLoop(twin)
    # Warm-up (first renders and ray casts allocate); both twins keep driving afterwards,
    # so timed repeat r covers states[warmup + r*steps : warmup + (r+1)*steps] in all three.
    run_twin(twin, warmup)
    run_env(env, warmup)
    bare.run(states[:warmup])
    rates: dict[str, list[float]] = {"twin": [], "env": [], "bare": []}
    crashes = 0
    for r in range(repeats):
        lo = warmup + r * steps
        rate, c1 = run_twin(twin, steps)
        rates["twin"].append(rate)
        rate, c2 = run_env(env, steps)
        rates["env"].append(rate)
        rates["bare"].append(bare.run(states[lo : lo + steps]))
        crashes += c1 + c2
    env.close()
    twin.close()
    out: dict[str, Any] = {"lidar": lidar, "camera": camera, "crashes": crashes}
    out.update({k: summarize(v) for k, v in rates.items()})
    out["steps_per_repeat"] = steps
    out["overhead_twin"] = out["bare"]["median"] / out["twin"]["median"]
    out["overhead_env"] = out["bare"]["median"] / out["env"]["median"]
    # Repeats drive different stretches of track (ray and render cost depend on the view), so
    # the per-repeat ratio, where all three saw the same stretch, is the less noisy figure.
    out["overhead_twin_paired"] = summarize(np.divide(rates["bare"], rates["twin"]))
    out["overhead_env_paired"] = summarize(np.divide(rates["bare"], rates["env"]))
    return out


# -- 2. camera frames/s --------------------------------------------------------------------
def bench_camera(size: int, frames: int, repeats: int) -> dict[str, Any]:
    """twin.camera() vs bare getCameraImage at size x size, one track pose per repeat."""
    twin = make_twin(twin_config(lidar=False, camera=True, size=size))
    bare = BareCamera(twin.world.client, twin.params.camera, twin.params.lighting)
    rates: dict[str, list[float]] = {"twin": [], "bare": []}
    same = True
    for r in range(repeats):
        twin.reset(np.random.default_rng(0), s=r * twin.track.length / repeats)
        x, y, yaw = twin.vs.x, twin.vs.y, twin.vs.yaw
        ref = twin.camera()  # warm-up and reference image
        t0 = time.perf_counter()
        for _ in range(frames):
            twin.camera()
        rates["twin"].append(frames / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(frames):
            img = bare.render(x, y, yaw)
        rates["bare"].append(frames / (time.perf_counter() - t0))
        same = same and bool(np.array_equal(ref, img))
    twin.close()
    out: dict[str, Any] = {"size": size, "frames_per_repeat": frames, "images_identical": same}
    out.update({k: summarize(v) for k, v in rates.items()})
    out["overhead"] = out["bare"]["median"] / out["twin"]["median"]
    return out


# -- 3. MPC solve time ---------------------------------------------------------------------
def bench_mpc(duration_s: float, horizon: int = 40, control_hz: float = 20.0) -> dict[str, Any]:
    """Solve-time percentiles of the Frenet MPC driving the oval in closed loop."""
    twin = make_twin(twin_config(lidar=False, camera=False, control_hz=control_hz))
    mpc = FrenetMPC(twin.track, MPCConfig(horizon=horizon))
    trace = drive(twin, mpc, DEFAULT, duration_s)
    twin.close()
    ms = np.asarray(trace.mpc_solve_times) * 1e3
    period_ms = 1e3 / control_hz
    return {
        "control_hz": control_hz,
        "horizon": horizon,
        "duration_s": duration_s,
        "solves": int(len(ms)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        # The first call also sets up OSQP; shown apart so a slow setup is not mistaken for a slow solve.
        "first_ms": float(ms[0]),
        "p99_after_first_ms": float(np.percentile(ms[1:] if len(ms) > 1 else ms, 99)),
        "period_ms": period_ms,
        "p99_over_period": float(np.percentile(ms, 99)) / period_ms,
        "fallbacks": int(trace.mpc_fallbacks),
        "crashed": bool(trace.crashed),
        "progress_m": float(trace["progress"][-1]) if len(trace["progress"]) else 0.0,
    }


# -- reporting -----------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "pybullet": version("pybullet"),
        "numpy": version("numpy"),
        "osqp": version("osqp"),
    }


def evaluate_targets(steps: list[dict], cams: list[dict], mpc: dict) -> list[dict[str, Any]]:
    """One row per target: what was measured, the threshold, and whether it was met."""
    rows = []
    for r in steps:
        rows.append({
            "target": f"twin overhead (lidar={'on' if r['lidar'] else 'off'}, camera={'on' if r['camera'] else 'off'})",
            "value": r["overhead_twin"], "threshold": f"<= {TARGETS['twin_overhead_max']}",
            "pass": r["overhead_twin"] <= TARGETS["twin_overhead_max"],
        })
    lidar_only = next(r for r in steps if r["lidar"] and not r["camera"])
    rows.append({
        "target": "env steps/s at 50 Hz with lidar", "value": lidar_only["env"]["median"],
        "threshold": f">= {TARGETS['env_steps_per_s_lidar_min']:g}",
        "pass": lidar_only["env"]["median"] >= TARGETS["env_steps_per_s_lidar_min"],
    })
    cam64 = next(c for c in cams if c["size"] == 64)
    rows.append({
        "target": "twin camera 64x64 frames/s", "value": cam64["twin"]["median"],
        "threshold": f">= {TARGETS['camera64_fps_min']:g}",
        "pass": cam64["twin"]["median"] >= TARGETS["camera64_fps_min"],
    })
    rows.append({
        "target": "MPC p99 solve time (ms)", "value": mpc["p99_ms"], "threshold": f"< {mpc['period_ms']:g} (period)",
        "pass": mpc["p99_ms"] < mpc["period_ms"],
    })
    return rows


def _rate(s: dict[str, Any]) -> str:
    return f"{s['median']:,.0f} ±{s['spread_pct']:.0f}%"


def _verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]MISS[/red]"


def print_report(console: Console, result: dict[str, Any]) -> None:
    t = Table(title="Control steps/s at 50 Hz (2 substeps), median ±half-range; ratios: of medians (paired)")
    for col in ("lidar", "camera", "twin step+sense", "env.step", "bare pybullet", "bare/twin", "bare/env", "crashes"):
        t.add_column(col, justify="right")
    for r in result["steps"]:
        t.add_row("on" if r["lidar"] else "off", "64x64" if r["camera"] else "off", _rate(r["twin"]),
                  _rate(r["env"]), _rate(r["bare"]),
                  f"{r['overhead_twin']:.2f}x ({r['overhead_twin_paired']['median']:.2f})",
                  f"{r['overhead_env']:.2f}x ({r['overhead_env_paired']['median']:.2f})", str(r["crashes"]))
    console.print(t)

    t = Table(title="Camera frames/s (TinyRenderer)")
    for col in ("size", "twin.camera()", "bare getCameraImage", "bare/twin", "same image"):
        t.add_column(col, justify="right")
    for c in result["camera"]:
        t.add_row(f"{c['size']}x{c['size']}", _rate(c["twin"]), _rate(c["bare"]), f"{c['overhead']:.2f}x",
                  "yes" if c["images_identical"] else "[red]no[/red]")
    console.print(t)

    m = result["mpc"]
    t = Table(title=f"MPC solve time, {m['control_hz']:g} Hz, horizon {m['horizon']}, {m['duration_s']:g} s on oval")
    for col in ("solves", "p50 ms", "p99 ms", "max ms", "first ms", "p99 w/o first", "period ms", "fallbacks",
                "crashed"):
        t.add_column(col, justify="right")
    t.add_row(str(m["solves"]), f"{m['p50_ms']:.2f}", f"{m['p99_ms']:.2f}", f"{m['max_ms']:.2f}",
              f"{m['first_ms']:.2f}", f"{m['p99_after_first_ms']:.2f}", f"{m['period_ms']:g}", str(m["fallbacks"]),
              str(m["crashed"]))
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
    ap.add_argument("--steps", type=int, default=None,
                    help="control steps per repeat with a sensor on (default 300, quick 40; 10x without sensors)")
    args = ap.parse_args(argv)

    repeats = args.repeats or (3 if args.quick else 5)
    steps = args.steps or (40 if args.quick else 300)
    warmup = 10 if args.quick else 50
    frames = 30 if args.quick else 150
    mpc_duration = 5.0 if args.quick else 20.0
    # Rich falls back to 80 columns when piped, which wraps the tables; logs are usually piped.
    console = Console(width=None if sys.stdout.isatty() else 130)
    progress: Callable[[str], None] = lambda msg: console.log(msg)  # noqa: E731

    started = time.perf_counter()
    # Without sensors a step is ~50x cheaper; 10x the steps keeps each of its repeats long
    # enough (~0.1 s) that scheduler and clock noise do not dominate, for a few seconds more.
    configs = [(lidar, camera, steps if lidar or camera else 10 * steps)
               for lidar, camera in ((False, False), (True, False), (False, True), (True, True))]
    longest = warmup + repeats * max(n for _, _, n in configs)
    progress(f"recording the reference trajectory ({longest} steps)")
    states = record_states(longest)
    step_results = []
    for lidar, camera, n in configs:
        progress(f"steps/s: lidar={lidar} camera={camera}, {repeats} x {n} steps")
        step_results.append(bench_steps(lidar, camera, states, n, repeats, warmup))
    cam_results = []
    for size in (64, 128):
        progress(f"camera frames/s: {size}x{size}")
        cam_results.append(bench_camera(size, frames, repeats))
    progress(f"MPC: {mpc_duration:g} s simulated at 20 Hz")
    mpc_result = bench_mpc(mpc_duration)

    result: dict[str, Any] = {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"quick": args.quick, "repeats": repeats, "steps_per_repeat": {
                         f"lidar={'on' if lidar else 'off'},camera={'on' if camera else 'off'}": n
                         for lidar, camera, n in configs}, "warmup_steps": warmup,
                     "camera_frames_per_repeat": frames, "speed_cmd": SPEED_CMD, "track": "oval",
                     "control_hz": 50.0, "physics_dt": 0.01, "threads": 1},
        "steps": step_results,
        "camera": cam_results,
        "mpc": mpc_result,
        "targets_spec": TARGETS,
    }
    result["targets"] = evaluate_targets(step_results, cam_results, mpc_result)
    result["wall_time_s"] = time.perf_counter() - started

    print_report(console, result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out} ({result['wall_time_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
