"""Speed benchmark of the bridge: Observation -> Decision round trips next to bare pyzmq.

    python benchmarks/bench_bridge.py [--quick] [--out benchmarks/results/bridge.json]

Both run in this one invocation on loopback TCP, the server in its own process:
- bridge: `RemotePolicy.decide(obs)` against `PolicyServer` serving a policy that returns one
  decision made beforehand (the default MPC parameters), so what is timed is the bridge: encoding, the
  ROUTER/DEALER hop, the server's I/O thread handing the observation to its policy thread
  and the decision back, decoding and the freshness checks;
- bare: a REQ socket sending the very bytes of the bridge's observation frames to a REP
  process that answers with the very bytes of a decision frame: what pyzmq alone costs.
Each with and without a 64x64x3 camera frame (the image the VLM reads), and each also after
idle gaps (a round trip following 200 ms of silence, where caches and the scheduler are
cold). Medians, p99 and the ratios bridge/bare are printed and written as JSON.

Then the silence watchdog: the emulated car drives through a relay whose link is cut
mid-drive; the robot side's time from the last message heard to the stop command (bound:
silence timeout + one control period) and to standstill.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.policies.car_expert import FixedParamsPolicy  # noqa: E402
from benchmarks.bench_car import machine_info  # noqa: E402
from bridge.client import ClientConfig, RemotePolicy, robot_for  # noqa: E402
from bridge.protocol import decision_message, encode, observation_message  # noqa: E402
from bridge.server import PolicyServer, ServerConfig  # noqa: E402
from twin.core.contracts import Decision, Observation  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "bridge.json"
TARGET_RATIO = 1.5
TARGET_P99_MS = 2.0
STATE = {"speed": 2.0, "lateral_offset": 0.1, "heading_error": 0.02, "steer": 0.01, "half_width": 0.9,
         "curvature": 0.2, "track_length": 60.0}


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _observation(frame: bool) -> Observation:
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8) if frame else None
    return Observation(1.0, STATE, image=image, instruction="Drive at 2.2 m/s.",
                       privileged={"category": "velocity", "target_speed": 2.2})


class ConstantPolicy:
    """Answers a decision made once (the default parameters): the bridge is what gets timed."""

    policy_id = "constant-default-params"

    def __init__(self) -> None:
        self.decision = FixedParamsPolicy().decide(_observation(False))

    def decide(self, observation: Observation) -> Decision:
        return self.decision


def _serve_bridge(endpoint: str, ready: Any) -> None:
    server = PolicyServer(ConstantPolicy(), ServerConfig(endpoint=endpoint))
    server.start()
    ready.set()
    while True:
        time.sleep(1.0)


def _serve_bare(endpoint: str, reply: bytes, ready: Any) -> None:
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.bind(endpoint)
    ready.set()
    while True:
        rep.recv_multipart()
        rep.send(reply)


def _timed(call, n: int, gap_s: float = 0.0) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        if gap_s:
            time.sleep(gap_s)
        t0 = time.perf_counter_ns()
        call()
        out[i] = (time.perf_counter_ns() - t0) / 1e6
    return out


def _stats(ms: np.ndarray) -> dict[str, float]:
    return {"n": int(len(ms)), "p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "per_s": float(1e3 / np.median(ms))}


def _bridge_times(ctx: Any, obs: Observation, n: int, idle_n: int) -> tuple[np.ndarray, np.ndarray]:
    endpoint, ready = _free_endpoint(), ctx.Event()
    proc = ctx.Process(target=_serve_bridge, args=(endpoint, ready), daemon=True)
    proc.start()
    ready.wait(30)
    try:
        with RemotePolicy(robot_for("car"), ClientConfig(endpoint=endpoint), timeout_s=5.0) as remote:
            _timed(lambda: remote.decide(obs), 200)  # warm-up (the server also learns the policy is fast)
            return _timed(lambda: remote.decide(obs), n), _timed(lambda: remote.decide(obs), idle_n, gap_s=0.2)
    finally:
        proc.kill()


def _bare_times(ctx: Any, frames: list[bytes], reply: bytes, n: int, idle_n: int) -> tuple[np.ndarray, np.ndarray]:
    endpoint, ready = _free_endpoint(), ctx.Event()
    proc = ctx.Process(target=_serve_bare, args=(endpoint, reply, ready), daemon=True)
    proc.start()
    ready.wait(30)
    zctx = zmq.Context()
    req = zctx.socket(zmq.REQ)
    req.connect(endpoint)

    def call() -> None:
        req.send_multipart(frames)
        req.recv()

    try:
        _timed(call, 200)
        return _timed(call, n), _timed(call, idle_n, gap_s=0.2)
    finally:
        req.close(0)
        zctx.term()
        proc.kill()


def run(n: int, idle_n: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    results: dict[str, Any] = {}
    reply = bytes(encode(decision_message(ConstantPolicy().decision, 1, 0.0, 1, 10.0))[0])
    for frame in (False, True):
        obs = _observation(frame)
        msg, arrays = observation_message(obs, 1, 0.0)
        frames = [bytes(f) for f in encode(msg, arrays)]
        bridge, bridge_idle = _bridge_times(ctx, obs, n, idle_n)
        bare, bare_idle = _bare_times(ctx, frames, reply, n, idle_n)
        results["frame" if frame else "state"] = {
            "bytes_sent": sum(len(f) for f in frames), "bytes_received": len(reply),
            "bridge": _stats(bridge), "bare": _stats(bare), "bridge_after_idle": _stats(bridge_idle),
            "bare_after_idle": _stats(bare_idle),
            "ratio_p50": float(np.median(bridge) / np.median(bare)),
            "ratio_p99": float(np.percentile(bridge, 99) / np.percentile(bare, 99)),
        }
    return results


def watchdog(trials: int, silence_s: float, out_dir: Path) -> dict[str, Any]:
    """Cut the link mid-drive (relay.cut) and measure, on the robot side, the time from the last
    message heard to the stop command, and to standstill; target: <= silence timeout + one period."""
    import threading

    from bridge.relay import Relay
    from bridge.robot.car.emulator import EmulatorConfig, run_emulator

    latencies, standstill = [], []
    for trial in range(trials):
        server = PolicyServer(ConstantPolicy(), ServerConfig(endpoint="tcp://127.0.0.1:0", heartbeat_s=0.05))
        server.start()
        relay = Relay(_free_endpoint(), server.endpoint)
        relay.start()
        timer = threading.Timer(1.5 + 0.37 * trial % 1.0, relay.cut)
        timer.start()
        try:
            result = run_emulator(EmulatorConfig(endpoint=relay.endpoint, track="oval", duration_s=3.0,
                                                 decide_every_s=0.3, silence_timeout_s=silence_s, heartbeat_s=0.05,
                                                 out=out_dir / f"watchdog-{trial}"))
        finally:
            timer.cancel()
            relay.stop()
            server.stop()
        for stop in result["safe_stops"]:
            latencies.append(stop["commanded"] - stop["last_heard"])
            if "standstill" in stop:
                standstill.append(stop["standstill"] - stop["last_heard"])
    bound = silence_s + 1 / 20.0
    return {"trials": trials, "silence_timeout_s": silence_s, "control_period_s": 1 / 20.0, "bound_s": bound,
            "stop_commanded_after_s": latencies, "standstill_after_s": standstill,
            "max_stop_commanded_after_s": max(latencies, default=float("nan")),
            "within_bound": bool(latencies) and max(latencies) <= bound}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few round trips: a smoke test, not a measurement")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = ap.parse_args(argv)
    n, idle_n = (300, 10) if args.quick else (5000, 50)
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.log(f"bridge vs bare pyzmq: {n} round trips each, {idle_n} after 200 ms idle gaps, state and frame")
    results = run(n, idle_n)
    table = Table(title="Observation -> Decision round trip on loopback (server in its own process)")
    for col in ("payload", "path", "p50 ms", "p99 ms", "max ms", "per s", "after idle p50", "after idle p99",
                "ratio p50", f"p99 <= {TARGET_P99_MS} ms"):
        table.add_column(col, justify="right")
    for name, r in results.items():
        for path in ("bridge", "bare"):
            s, idle = r[path], r[f"{path}_after_idle"]
            ratio = f"{r['ratio_p50']:.2f}x " + ("PASS" if r["ratio_p50"] <= TARGET_RATIO else "MISS") \
                if path == "bridge" else ""
            p99 = ("PASS" if s["p99_ms"] <= TARGET_P99_MS else "MISS") if path == "bridge" else ""
            table.add_row(f"{name} ({r['bytes_sent']} B)", path, f"{s['p50_ms']:.3f}", f"{s['p99_ms']:.3f}",
                          f"{s['max_ms']:.2f}", f"{s['per_s']:.0f}", f"{idle['p50_ms']:.3f}", f"{idle['p99_ms']:.3f}",
                          ratio, p99)
    console.print(table)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trials = 3 if args.quick else 10
        console.log(f"watchdog: {trials} drives with the link cut mid-drive (silence timeout 0.3 s, 20 Hz)")
        dog = watchdog(trials, 0.3, Path(tmp))
    console.print(f"safe stop commanded {1e3 * min(dog['stop_commanded_after_s']):.0f}-"
                  f"{1e3 * dog['max_stop_commanded_after_s']:.0f} ms after the last message heard "
                  f"(bound {1e3 * dog['bound_s']:.0f} ms: {'PASS' if dog['within_bound'] else 'MISS'}); "
                  f"standstill after {np.median(dog['standstill_after_s']):.2f} s (median)")
    out = {"timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "machine": machine_info(),
           "settings": {"round_trips": n, "after_idle": idle_n, "idle_gap_s": 0.2, "quick": args.quick},
           "targets": {"ratio_p50": TARGET_RATIO, "p99_ms": TARGET_P99_MS}, "results": results, "watchdog": dog}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    console.log(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
