"""Speed benchmark of the safety layer: shield time per control step, audit log rates.

Everything is measured in one run on this machine, so the ratios compare like with like.
A figure's spread is half the min-max range of its per-repeat values as a percentage of
their median (as in bench_car.py); percentiles are over all timed calls pooled.

1. Shield overhead per control step. A CarTwin (track 'oval', default CarTwinConfig: 50 Hz,
   lidar 1080 beams) drives under a simple lane-keeping law (target speed swinging between
   2 and 4 m/s, steer = clip(-1.5 d - 1.0 alpha, +-0.4)), with the guard's verdict on that
   command executed, so the states are the ones a shielded car really passes through. At
   every step these calls are each timed once, in a random order per step (so no call is
   always the first after the twin moved, with colder caches):
     guard  CarGuard.filter(cmd) (map only) and CarGuard.filter(cmd, ranges) with the full
            scan: reads twin.state, turns ranges into points, filters, counts the verdict;
     shield CarShield.filter(state, cmd) on a CarShieldState built beforehand (untimed), map
            only and with the lidar points: the shield's own work;
   each for (a) the lane-keeping command (mostly passes) and (b) a reckless one: speed 5 m/s,
   steer uniform in +-steer_max (mostly intervened, which is the slow path: other steering
   angles are searched). For comparison FactoryShield.filter on random cell states and
   commands, and as the baseline the twin's own CarTwin.step (and CarTwin.lidar, the scan
   the lidar-aware filter needs) at the same steps. Shield time is put next to the median
   step time and the 20 ms control period. Timing uses perf_counter_ns around the bare call;
   the clock's own cost (measured, ~0.1 us) is not subtracted. The garbage collector stays
   on, as in a real control loop, so its pauses show in the tails (p99, max).
2. Audit log rates (records/s). N decision-like records (15 fields shaped like
   safety.audit.records.decision_body: ids, digest, state, a 200-character thought, raw
   output, the 11 MPC parameters as action, executed command, shield verdict, costs) are
   built beforehand, then written, each way into a fresh file of a temporary directory:
     plain f.write     f.write(json.dumps(rec) + "\\n") on a buffered text file;
     plain os.write    os.write of each line on an O_APPEND descriptor (unbuffered, as the log);
     audit             AuditLog.append (default AuditConfig: checkpoint every 100, no fsync):
                       canonical JSON, SHA-256 chain, Merkle frontier, Ed25519-signed
                       checkpoints and the head file rewritten at each checkpoint;
     + fsync           plain os.write + fsync and AuditLog(fsync=True), on fewer records.
   Each rate includes opening and closing (the audit log's final checkpoint). Then
   verify(path, public_key) on each repeat's audit log, as records/s. Ratios audit/plain are
   of median rates; the JSON also has the per-repeat (paired) ratios. fsync's cost depends on
   the filesystem under the temporary directory (tmpfs makes it free), so its type is
   recorded; --tmpdir picks another place.
3. Reading back a long log (records/s): a log of --long-log records cut to about 1 KB a
   line (the size the verify target is stated for) is written once, then read back each
   repeat three ways, in a rotating order: the bare baseline (every line through json.loads,
   no checks), verify in one process (workers=1), and verify as it runs by default (both
   cores for a log this long: chunks checked in forked workers).

Results are printed as rich tables with PASS/MISS against the targets (never asserted)
and written as JSON (default benchmarks/results/safety.json).
"""

from __future__ import annotations

import os

# One thread for numeric libraries, set before numpy is imported: timings should not
# depend on how many idle cores the machine has (as in bench_car.py).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

# The project is not installed as a package; running this file puts benchmarks/ on the
# path, not the repository root.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.control.mpc_params import PARAM_TABLE  # noqa: E402
from benchmarks.bench_car import machine_info, quiet_stdout, summarize  # noqa: E402
from safety.audit.keys import generate  # noqa: E402
from safety.audit.log import AuditConfig, AuditLog  # noqa: E402
from safety.audit.verify import default_workers as verify_workers  # noqa: E402
from safety.audit.verify import verify  # noqa: E402
from safety.car.guard import CarGuard  # noqa: E402
from safety.car.shield import CarShieldState, lidar_points  # noqa: E402
from safety.factory.shield import FactoryShield, FactoryShieldState  # noqa: E402
from safety.verdict import Verdict  # noqa: E402
from twin.car.actuation import Command  # noqa: E402
from twin.car.twin import CarTwin, CarTwinConfig  # noqa: E402
from twin.factory.command import FactoryCommand  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "safety.json"
STEER_LIMIT = 0.4
"""Steering clip of the lane-keeping law (rad)."""
SPEED_LOW, SPEED_HIGH = 2.0, 4.0
"""Range the lane-keeping target speed swings through (m/s)."""
SPEED_PERIOD_STEPS = 500
"""One swing of the target speed (10 s at 50 Hz): each repeat sees slow and fast stretches."""
RECKLESS_SPEED = 5.0

TARGETS = {"guard_map_median_us_max": 50.0, "guard_scan_median_us_max": 100.0, "verify_records_per_s_min": 100_000,
           "append_vs_plain_min": 0.8}

CAR_CALLS = tuple(f"{who}/{sensing}/{cmd}" for who in ("guard", "shield") for sensing in ("map", "lidar")
                  for cmd in ("lane", "reckless"))
"""The timed shield calls: who is called, with which sensing, on which command."""
BASELINE_CALLS = ("twin.step", "twin.lidar")
FACTORY_CALL = "factory"
DRIVE_CALL = "guard/lidar/lane"
"""The call whose executed command drives the car."""


# -- helpers ------------------------------------------------------------------------------
def percentiles_us(ns: Sequence[int]) -> dict[str, float]:
    """Median, p90, p99 and max of call times given in ns, in microseconds."""
    a = np.asarray(ns, dtype=float) / 1e3
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "calls": int(len(a))}


def clock_overhead_ns(n: int = 20_000) -> float:
    """Median cost of one perf_counter_ns pair around nothing: the floor under every timing."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        samples.append(clock() - t0)
    return float(np.median(samples))


def filesystem_of(path: Path) -> str:
    """Filesystem type under `path` (from /proc/mounts; 'unknown' elsewhere): fsync costs depend on it."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    target = str(path.resolve())
    best, fstype = "", "unknown"
    for mount, kind in mounts:
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
            best, fstype = mount, kind
    return fstype


def package_version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- 1. shield overhead --------------------------------------------------------------------
def lane_command(d: float, alpha: float, step: int) -> Command:
    """The lane-keeping law, its target speed swinging between SPEED_LOW and SPEED_HIGH."""
    mid, amp = (SPEED_LOW + SPEED_HIGH) / 2, (SPEED_HIGH - SPEED_LOW) / 2
    speed = mid + amp * math.sin(2 * math.pi * step / SPEED_PERIOD_STEPS)
    steer = max(-STEER_LIMIT, min(STEER_LIMIT, -1.5 * d - 1.0 * alpha))
    return Command(speed, steer)


def random_factory_case(rng: np.random.Generator) -> tuple[FactoryShieldState, FactoryCommand]:
    """A cell state and command spread over passes, slow-downs, protective stops and withheld releases."""
    separation = math.inf if rng.random() < 0.2 else float(rng.uniform(0.2, 3.0))
    human_speed = None if rng.random() < 0.5 else float(rng.uniform(0.0, 2.0))
    st = FactoryShieldState(separation, human_speed, jammed=bool(rng.random() < 0.1),
                            holding=bool(rng.random() < 0.5), over_bin=bool(rng.random() < 0.5))
    cmd = FactoryCommand(float(rng.uniform(-1.2, 1.2)), float(rng.uniform(0.0, 0.6)), bool(rng.random() < 0.3))
    return st, cmd


class ShieldBench:
    """One twin driving the oval with the guard in the loop; times every call of interest each step."""

    def __init__(self, seed: int = 0) -> None:
        with quiet_stdout():
            self.twin = CarTwin(CarTwinConfig(track="oval"))
        self.rng = np.random.default_rng(seed)
        self.twin.reset(np.random.default_rng(seed))
        self.guard = CarGuard(self.twin)
        self.guard.reset()
        self.factory = FactoryShield()
        lp = self.twin.params.lidar
        angles = np.linspace(-lp.fov / 2, lp.fov / 2, int(lp.beams))
        self.beams = (np.cos(angles), np.sin(angles))
        self.max_range = lp.max_range
        self.steer_max = self.twin.params.vehicle.steer_max
        self.step_index = 0
        self.crashes = 0

    def close(self) -> None:
        self.twin.close()

    def run(self, steps: int) -> tuple[dict[str, list[int]], dict[str, dict[str, int]], dict[str, dict[str, int]]]:
        """(ns per call, verdict kinds, intervention reasons), each by call name, over `steps` control steps."""
        names = (*CAR_CALLS, FACTORY_CALL, *BASELINE_CALLS)
        times: dict[str, list[int]] = {n: [] for n in names}
        kinds: dict[str, dict[str, int]] = {n: {} for n in (*CAR_CALLS, FACTORY_CALL)}
        reasons: dict[str, dict[str, int]] = {n: {} for n in (*CAR_CALLS, FACTORY_CALL)}
        clock = time.perf_counter_ns
        guard, shield, twin = self.guard, self.guard.shield, self.twin
        for _ in range(steps):
            t0 = clock()
            ranges = twin.lidar()
            times["twin.lidar"].append(clock() - t0)

            st = twin.state
            commands = {"lane": lane_command(st.d, st.alpha, self.step_index),
                        "reckless": Command(RECKLESS_SPEED, float(self.rng.uniform(-self.steer_max, self.steer_max)))}
            # The shield-only calls get their state ready-made: what is left is the shield's own work.
            map_state = CarShieldState(st.x, st.y, st.yaw, st.v, st.steer, st.s)
            points = lidar_points(*self.beams, np.asarray(ranges, float), self.max_range)
            lidar_state = dataclasses.replace(map_state, lidar_points=points)
            fstate, fcmd = random_factory_case(self.rng)
            calls: dict[str, tuple[Callable[..., Verdict], tuple]] = {
                "guard/map/lane": (guard.filter, (commands["lane"],)),
                "guard/map/reckless": (guard.filter, (commands["reckless"],)),
                "guard/lidar/lane": (guard.filter, (commands["lane"], ranges)),
                "guard/lidar/reckless": (guard.filter, (commands["reckless"], ranges)),
                "shield/map/lane": (shield.filter, (map_state, commands["lane"])),
                "shield/map/reckless": (shield.filter, (map_state, commands["reckless"])),
                "shield/lidar/lane": (shield.filter, (lidar_state, commands["lane"])),
                "shield/lidar/reckless": (shield.filter, (lidar_state, commands["reckless"])),
                FACTORY_CALL: (self.factory.filter, (fstate, fcmd)),
            }
            order = list(calls)
            self.rng.shuffle(order)
            verdicts: dict[str, Verdict] = {}
            # The shield remembers its last steering (the backup's fallback). Every call starts from
            # the same memory, and the driving call's is kept, so the extra calls leave no trace on
            # the drive and none sees another's command.
            last_steer = drive_steer = shield.last_steer
            for name in order:
                fn, args = calls[name]
                shield.last_steer = last_steer
                t0 = clock()
                verdict = fn(*args)
                times[name].append(clock() - t0)
                verdicts[name] = verdict
                if name == DRIVE_CALL:
                    drive_steer = shield.last_steer
                kinds[name][verdict.kind] = kinds[name].get(verdict.kind, 0) + 1
                for why in verdict.reasons:  # grouped as InterventionCounter does: text before ':'
                    key = why.split(":")[0]
                    reasons[name][key] = reasons[name].get(key, 0) + 1

            # Drive with what the shield lets through: the states are those of a shielded car.
            shield.last_steer = drive_steer
            executed = verdicts[DRIVE_CALL].executed
            cmd = Command(executed["speed"], executed["steer"])
            t0 = clock()
            twin.step(cmd)
            times["twin.step"].append(clock() - t0)
            self.step_index += 1
            if twin.crashed:
                self.crashes += 1
                twin.reset(np.random.default_rng(self.crashes), s=st.s)
                guard.reset()
        return times, kinds, reasons


def bench_shield(steps: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Per-call time distributions of the shields and the twin's step, repeats on successive track stretches."""
    bench = ShieldBench()
    bench.run(warmup)  # first calls allocate and fill caches
    pooled: dict[str, list[int]] = {}
    per_repeat: dict[str, list[float]] = {}
    kinds: dict[str, dict[str, int]] = {}
    reasons: dict[str, dict[str, int]] = {}
    for _ in range(repeats):
        times, k, why = bench.run(steps)
        for name, ns in times.items():
            pooled.setdefault(name, []).extend(ns)
            per_repeat.setdefault(name, []).append(float(np.median(ns)) / 1e3)
        for name, counts in k.items():
            for kind, c in counts.items():
                kinds.setdefault(name, {}).setdefault(kind, 0)
                kinds[name][kind] += c
        for name, counts in why.items():
            for reason, c in counts.items():
                reasons.setdefault(name, {}).setdefault(reason, 0)
                reasons[name][reason] += c
    track_m = bench.twin.state.progress
    crashes = bench.crashes
    bench.close()

    step_med = float(np.median(pooled["twin.step"])) / 1e3
    scan_med = float(np.median(pooled["twin.lidar"])) / 1e3
    period_us = 1e6 / 50.0
    calls: dict[str, Any] = {}
    for name, ns in pooled.items():
        row: dict[str, Any] = {"us": percentiles_us(ns), "repeat_medians_us": summarize(per_repeat[name])}
        if name in kinds:
            total = sum(kinds[name].values())
            row["verdicts"] = kinds[name]
            row["reasons"] = dict(sorted(reasons.get(name, {}).items(), key=lambda kv: -kv[1]))
            row["intervened_frac"] = 1.0 - kinds[name].get("passed", 0) / total
        med = row["us"]["median"]
        row["frac_of_step"] = med / step_med
        row["frac_of_step_and_scan"] = med / (step_med + scan_med)
        row["frac_of_period"] = med / period_us
        calls[name] = row
    return {"calls": calls, "steps_per_repeat": steps, "repeats": repeats, "warmup_steps": warmup,
            "crashes": crashes, "progress_m": float(track_m), "control_period_us": period_us,
            "twin_step_median_us": step_med, "twin_lidar_median_us": scan_med}


# -- 2. audit log rates --------------------------------------------------------------------
WORDS = ("the", "car", "is", "close", "to", "the", "inner", "wall", "so", "lower", "speed", "and", "keep", "a",
         "wider", "margin", "before", "the", "next", "corner", "tyres", "grip", "track", "heading", "error", "small")


def thought_text(rng: np.random.Generator, n: int = 200) -> str:
    """An n-character chain of thought made of track words."""
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < n:
        words.append(WORDS[int(rng.integers(len(WORDS)))])
    return " ".join(words)[:n]


def decision_record(i: int, rng: np.random.Generator) -> dict[str, Any]:
    """A record shaped like safety.audit.records.decision_body's output (15 fields)."""
    action = {p.name: round(float(np.clip(p.default * rng.uniform(0.8, 1.2), p.low, p.high)), 4)
              for p in PARAM_TABLE}
    thought = thought_text(rng)
    speed, steer = float(rng.uniform(0, 4)), float(rng.uniform(-0.4, 0.4))
    executed = {"speed": min(speed, 3.0), "steer": steer}
    return {
        "decision_id": rng.bytes(16).hex(),
        "sim_time": i * 0.05,
        "policy_id": "vlm:qwen2.5-vl-3b+lora-3f9a2c1e",
        "observation_digest": hashlib.sha256(rng.bytes(32)).hexdigest(),
        "state": {"speed": speed, "d": float(rng.normal(0, 0.2)), "alpha": float(rng.normal(0, 0.1)),
                  "s": float(rng.uniform(0, 48)), "progress": i * 0.15},
        "instruction": "Drive the oval fast but keep 0.3 m from the walls.",
        "thought": thought,
        "raw_output": f"<think>{thought}</think>\n{json.dumps(action)}",
        "parse_status": "ok",
        "action": action,
        "executed": executed,
        "shield": {"kind": "modified" if speed > 3.0 else "passed", "proposed": {"speed": speed, "steer": steer},
                   "executed": executed, "reasons": ["stopping distance"] if speed > 3.0 else [],
                   "margins": {"clearance": float(rng.uniform(0, 2)), "speed": 5.0 - executed["speed"],
                               "lateral_accel": float(rng.uniform(0, 6))}},
        "costs": {"collision": 0.0, "speed": 0.0, "lateral_accel": 0.0},
        "frame_sha256": hashlib.sha256(rng.bytes(32)).hexdigest(),
        "context": {"episode": i // 400, "step": i % 400, "track": "oval"},
    }


def kilobyte_record(i: int, rng: np.random.Generator) -> dict[str, Any]:
    """A decision record cut to about 1 KB a logged line (the size the verify target is stated for):
    a short thought, no raw output or digests."""
    rec = decision_record(i, rng)
    rec["thought"], rec["instruction"], rec["raw_output"] = rec["thought"][:20], rec["instruction"][:20], ""
    rec["policy_id"] = "vlm:smollm2"
    for name in ("frame_sha256", "observation_digest", "costs"):
        del rec[name]
    del rec["shield"]["proposed"]
    return rec


def read_plain(path: Path) -> int:
    """The bare baseline of reading a log back: every line through json.loads (no checks)."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            json.loads(line)
            n += 1
    return n


def bench_verify_scale(n: int, repeats: int, tmp_root: Path | None) -> dict[str, Any]:
    """Records/s of verify on a long log of ~1 KB records: in this process, on both cores (the
    default for a long log), and the plain json.loads read-back beside them."""
    rng = np.random.default_rng(2)
    base = [kilobyte_record(i, rng) for i in range(1000)]
    rates: dict[str, list[float]] = {"plain_json_loads": [], "verify_1_process": [], "verify_default": []}
    with tempfile.TemporaryDirectory(prefix="bench_verify_", dir=tmp_root) as tmp:
        tmpdir = Path(tmp)
        key = generate(tmpdir / "key.pem", tmpdir / "key.pub.pem")
        path = tmpdir / "audit.jsonl"
        with AuditLog(path, key) as log:
            for i in range(n):
                log.append("decision", base[i % len(base)])
        entries, size = sum(1 for _ in open(path, "rb")), path.stat().st_size
        ways: dict[str, Callable[[], bool]] = {
            "plain_json_loads": lambda: read_plain(path) == entries,
            "verify_1_process": lambda: verify(path, key.public_key(), workers=1).ok,
            "verify_default": lambda: verify(path, key.public_key()).ok,
        }
        ok = True
        names = list(ways)
        for r in range(repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:
                t0 = time.perf_counter()
                ok = ways[name]() and ok
                rates[name].append(entries / (time.perf_counter() - t0))
        workers = verify_workers(path)
    out: dict[str, Any] = {"records": n, "entries": entries, "bytes_per_entry": size / entries, "log_mb": size / 1e6,
                           "repeats": repeats, "ok": ok, "default_workers": workers,
                           "rates": {k: summarize(v) for k, v in rates.items()}}
    out["ratios"] = {f"{k}/plain_json_loads": out["rates"][k]["median"] / out["rates"]["plain_json_loads"]["median"]
                     for k in ("verify_1_process", "verify_default")}
    return out


def write_plain(path: Path, records: Sequence[dict]) -> float:
    """Seconds to write records as JSON lines through Python's buffered file (open and close included)."""
    t0 = time.perf_counter()
    with open(path, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    return time.perf_counter() - t0


def write_plain_unbuffered(path: Path, records: Sequence[dict], fsync: bool = False) -> float:
    """Seconds to write records as JSON lines with one os.write each, as the audit log does."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for rec in records:
            os.write(fd, (json.dumps(rec) + "\n").encode())
            if fsync:
                os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def write_audit(path: Path, key: Any, records: Sequence[dict], config: AuditConfig) -> float:
    """Seconds to append records to a new AuditLog (closing writes the final checkpoint)."""
    t0 = time.perf_counter()
    with AuditLog(path, key, config) as log:
        for rec in records:
            log.append("decision", rec)
    return time.perf_counter() - t0


def bench_audit(n: int, n_fsync: int, repeats: int, tmp_root: Path | None) -> dict[str, Any]:
    """Records/s of plain JSON lines and of the audit log, with and without fsync, and of verify."""
    rng = np.random.default_rng(1)
    records = [decision_record(i, rng) for i in range(n)]
    few = records[:n_fsync]
    rates: dict[str, list[float]] = {k: [] for k in ("plain_fwrite", "plain_oswrite", "audit", "plain_oswrite_fsync",
                                                     "audit_fsync", "verify")}
    verify_ok, entries, log_bytes, plain_bytes = True, 0, 0, 0
    with tempfile.TemporaryDirectory(prefix="bench_safety_", dir=tmp_root) as tmp:
        tmpdir = Path(tmp)
        key = generate(tmpdir / "key.pem", tmpdir / "key.pub.pem")
        public = key.public_key()
        writers: dict[str, Callable[[Path], float]] = {
            "plain_fwrite": lambda p: write_plain(p, records),
            "plain_oswrite": lambda p: write_plain_unbuffered(p, records),
            "audit": lambda p: write_audit(p, key, records, AuditConfig()),
            "plain_oswrite_fsync": lambda p: write_plain_unbuffered(p, few, fsync=True),
            "audit_fsync": lambda p: write_audit(p, key, few, AuditConfig(fsync=True)),
        }
        counts = {"plain_fwrite": n, "plain_oswrite": n, "audit": n, "plain_oswrite_fsync": n_fsync,
                  "audit_fsync": n_fsync}
        names = list(writers)
        for r in range(repeats):
            run_dir = tmpdir / f"run{r}"
            run_dir.mkdir()
            # Rotate the order so a slow moment of the machine does not always hit the same writer.
            for name in names[r % len(names):] + names[: r % len(names)]:
                rates[name].append(counts[name] / writers[name](run_dir / f"{name}.jsonl"))
            t0 = time.perf_counter()
            report = verify(run_dir / "audit.jsonl", public)
            rates["verify"].append(n / (time.perf_counter() - t0))
            verify_ok = verify_ok and report.ok
            entries = report.entries
            log_bytes = (run_dir / "audit.jsonl").stat().st_size
            plain_bytes = (run_dir / "plain_oswrite.jsonl").stat().st_size
        fstype = filesystem_of(tmpdir)
        where = str(tmpdir.parent)

    out: dict[str, Any] = {"records": n, "records_fsync": n_fsync, "repeats": repeats, "tmp_dir": where,
                           "filesystem": fstype, "verify_ok": verify_ok, "audit_entries": entries,
                           "checkpoints": entries - n, "plain_bytes_per_record": plain_bytes / n,
                           "audit_bytes_per_record": log_bytes / n}
    out["rates"] = {k: summarize(v) for k, v in rates.items()}

    def ratio(a: str, b: str) -> dict[str, Any]:
        # Of medians, and per repeat (paired: both ran back to back in the same repeat).
        return {"of_medians": out["rates"][a]["median"] / out["rates"][b]["median"],
                "paired": summarize(np.divide(rates[a], rates[b]))}

    out["ratios"] = {"audit/plain_fwrite": ratio("audit", "plain_fwrite"),
                     "audit/plain_oswrite": ratio("audit", "plain_oswrite"),
                     "audit_fsync/plain_oswrite_fsync": ratio("audit_fsync", "plain_oswrite_fsync")}
    # Extra time per record the log costs over a plain unbuffered write (us): the per-decision price.
    out["audit_extra_us_per_record"] = 1e6 * (1 / out["rates"]["audit"]["median"]
                                              - 1 / out["rates"]["plain_oswrite"]["median"])
    return out


# -- reporting -----------------------------------------------------------------------------
def evaluate_targets(shield: dict[str, Any], audit: dict[str, Any], scale: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: what was measured, the threshold, and whether it was met."""
    rows = []
    for name in CAR_CALLS:
        if not name.startswith("guard/"):
            continue
        _, sensing, cmd = name.split("/")
        med = shield["calls"][name]["us"]["median"]
        what = "map only" if sensing == "map" else "with 1080-beam scan"
        limit = TARGETS["guard_map_median_us_max" if sensing == "map" else "guard_scan_median_us_max"]
        rows.append({"target": f"CarGuard.filter median us ({what}, {cmd} command)", "value": med,
                     "threshold": f"<= {limit:g}", "pass": med <= limit})
    append = audit["ratios"]["audit/plain_fwrite"]["of_medians"]
    rows.append({"target": "AuditLog.append rate / plain f.write(json.dumps) rate", "value": append,
                 "threshold": f">= {TARGETS['append_vs_plain_min']:g}", "pass": append >= TARGETS["append_vs_plain_min"]})
    rate = scale["rates"]["verify_default"]["median"]
    rows.append({"target": f"verify records/s, {scale['bytes_per_entry']:.0f} B entries, {scale['log_mb']:.0f} MB log",
                 "value": rate, "threshold": f">= {TARGETS['verify_records_per_s_min']:,}",
                 "pass": rate >= TARGETS["verify_records_per_s_min"]})
    ok = bool(audit["verify_ok"] and scale["ok"])
    rows.append({"target": "verify() accepts every benchmark log", "value": float(ok), "threshold": "ok", "pass": ok})
    return rows


def _verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]MISS[/red]"


def _rate(s: dict[str, Any]) -> str:
    return f"{s['median']:,.0f} ±{s['spread_pct']:.0f}%"


LABELS = {
    "guard/map/lane": "CarGuard.filter, map, lane-keeping",
    "guard/map/reckless": "CarGuard.filter, map, reckless",
    "guard/lidar/lane": "CarGuard.filter, map+scan, lane-keeping",
    "guard/lidar/reckless": "CarGuard.filter, map+scan, reckless",
    "shield/map/lane": "CarShield.filter, map, lane-keeping",
    "shield/map/reckless": "CarShield.filter, map, reckless",
    "shield/lidar/lane": "CarShield.filter, map+points, lane-keeping",
    "shield/lidar/reckless": "CarShield.filter, map+points, reckless",
    FACTORY_CALL: "FactoryShield.filter, random cases",
    "twin.step": "baseline: CarTwin.step",
    "twin.lidar": "baseline: CarTwin.lidar (1080 beams)",
}


def print_report(console: Console, result: dict[str, Any]) -> None:
    sh = result["shield"]
    t = Table(title=f"Time per call (us) over {sh['repeats']} x {sh['steps_per_repeat']} steps on the oval at 50 Hz; "
                    "median ±half-range of repeat medians; % of twin.step median")
    for col in ("call", "median", "p90", "p99", "max", "intervened", "% of step", "% of step+scan", "% of 20 ms"):
        t.add_column(col, justify="left" if col == "call" else "right")
    for name in (*CAR_CALLS, FACTORY_CALL, *BASELINE_CALLS):
        row = sh["calls"][name]
        us, rep = row["us"], row["repeat_medians_us"]
        inter = f"{100 * row['intervened_frac']:.0f}%" if "intervened_frac" in row else "-"
        t.add_row(LABELS[name], f"{us['median']:.1f} ±{rep['spread_pct']:.0f}%", f"{us['p90']:.1f}",
                  f"{us['p99']:.1f}", f"{us['max']:.0f}", inter, f"{100 * row['frac_of_step']:.0f}%",
                  f"{100 * row['frac_of_step_and_scan']:.0f}%", f"{100 * row['frac_of_period']:.2f}%")
    console.print(t)
    console.print(f"clock overhead {result['clock_overhead_ns']:.0f} ns a call (not subtracted); "
                  f"crashes {sh['crashes']}; driven {sh['progress_m']:.0f} m")

    au = result["audit"]
    t = Table(title=f"Audit log: {au['records']:,} records ({au['records_fsync']:,} with fsync), "
                    f"{au['repeats']} repeats, tmp on {au['filesystem']}")
    for col in ("writer", "records/s (median ±half-range)", "us/record", "rate vs plain"):
        t.add_column(col, justify="left" if col == "writer" else "right")
    rates, ratios = au["rates"], au["ratios"]
    rows = (
        ("plain: f.write(json.dumps) buffered", "plain_fwrite", ""),
        ("plain: os.write per line", "plain_oswrite", ""),
        ("AuditLog.append (checkpoint 100)", "audit",
         f"{ratios['audit/plain_fwrite']['of_medians']:.2f}x f.write, "
         f"{ratios['audit/plain_oswrite']['of_medians']:.2f}x os.write"),
        ("plain: os.write + fsync per line", "plain_oswrite_fsync", ""),
        ("AuditLog.append, fsync=True", "audit_fsync",
         f"{ratios['audit_fsync/plain_oswrite_fsync']['of_medians']:.2f}x os.write+fsync"),
        ("verify(path, public_key)", "verify", ""),
    )
    for label, key, vs in rows:
        t.add_row(label, _rate(rates[key]), f"{1e6 / rates[key]['median']:.1f}", vs)
    console.print(t)
    sc = result["verify_scale"]
    t = Table(title=f"Reading back a long log: {sc['entries']:,} entries of {sc['bytes_per_entry']:.0f} B "
                    f"({sc['log_mb']:.0f} MB), {sc['repeats']} repeats")
    for col in ("reader", "records/s (median ±half-range)", "us/record", "vs json.loads"):
        t.add_column(col, justify="left" if col == "reader" else "right")
    for label, key in (("plain: json.loads per line (no checks)", "plain_json_loads"),
                       ("verify, one process", "verify_1_process"),
                       (f"verify, default ({sc['default_workers']} processes)", "verify_default")):
        vs = "" if key == "plain_json_loads" else f"{sc['ratios'][key + '/plain_json_loads']:.2f}x"
        t.add_row(label, _rate(sc["rates"][key]), f"{1e6 / sc['rates'][key]['median']:.1f}", vs)
    console.print(t)
    console.print(f"{au['plain_bytes_per_record']:.0f} B a plain line, {au['audit_bytes_per_record']:.0f} B a logged "
                  f"decision (checkpoints included); {au['checkpoints']} checkpoints; the log adds "
                  f"{au['audit_extra_us_per_record']:.1f} us a record over a plain os.write")

    t = Table(title="Targets")
    for col in ("target", "value", "threshold", "result"):
        t.add_column(col, justify="right" if col != "target" else "left")
    for row in result["targets"]:
        t.add_row(row["target"], f"{row['value']:,.1f}", row["threshold"], _verdict(row["pass"]))
    console.print(t)


# -- main ----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few steps and records: a smoke test, not a measurement")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 5, quick 3)")
    ap.add_argument("--steps", type=int, default=None, help="control steps per shield repeat (default 1000, quick 150)")
    ap.add_argument("--records", type=int, default=None, help="records per audit repeat (default 5000, quick 1000)")
    ap.add_argument("--long-log", type=int, default=None,
                    help="~1 KB records in the long log verify reads back (default 100000, quick 5000)")
    ap.add_argument("--fsync-records", type=int, default=None,
                    help="records per fsync repeat (default 300, quick 50)")
    ap.add_argument("--tmpdir", type=Path, default=None, help="where the audit logs are written (default: system temp)")
    args = ap.parse_args(argv)

    repeats = args.repeats or (3 if args.quick else 5)
    steps = args.steps or (150 if args.quick else 1000)
    warmup = 20 if args.quick else 100
    records = args.records or (1000 if args.quick else 5000)
    fsync_records = min(records, args.fsync_records or (50 if args.quick else 300))
    # Rich falls back to 80 columns when piped, which wraps the tables; logs are usually piped.
    console = Console(width=None if sys.stdout.isatty() else 140)
    progress: Callable[[str], None] = lambda msg: console.log(msg)  # noqa: E731

    started = time.perf_counter()
    overhead = clock_overhead_ns()
    progress(f"shield: {repeats} x {steps} control steps on the oval (+{warmup} warm-up)")
    shield_result = bench_shield(steps, repeats, warmup)
    progress(f"audit: {repeats} x {records} records, {fsync_records} with fsync")
    audit_result = bench_audit(records, fsync_records, repeats, args.tmpdir)
    long_log = args.long_log or (5000 if args.quick else 100_000)
    progress(f"verify: {repeats} x reading back a log of {long_log:,} records of ~1 KB")
    scale_result = bench_verify_scale(long_log, repeats, args.tmpdir)

    machine = machine_info()
    machine["cryptography"] = package_version("cryptography")
    result: dict[str, Any] = {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {"quick": args.quick, "repeats": repeats, "steps_per_repeat": steps, "warmup_steps": warmup,
                     "track": "oval", "twin_config": "CarTwinConfig() defaults (50 Hz, physics 0.01 s, lidar on)",
                     "lane_speed_range": [SPEED_LOW, SPEED_HIGH], "lane_steer_limit": STEER_LIMIT,
                     "reckless_speed": RECKLESS_SPEED, "audit_records": records, "audit_fsync_records": fsync_records,
                     "audit_config": dataclasses.asdict(AuditConfig()), "threads": 1, "gc": "enabled"},
        "clock_overhead_ns": overhead,
        "shield": shield_result,
        "audit": audit_result,
        "verify_scale": scale_result,
        "targets_spec": TARGETS,
    }
    result["targets"] = evaluate_targets(shield_result, audit_result, scale_result)
    result["wall_time_s"] = time.perf_counter() - started

    print_report(console, result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out} ({result['wall_time_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
