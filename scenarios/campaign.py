"""The campaign runner: many independent, deterministic episodes, run in parallel, stored one row each,
resumable after a kill.

A campaign is a list of work items `(index, payload)`; an episode function `fn(payload) -> dict` runs
one. `run_campaign` executes the items on a backend and commits ONE ROW PER EPISODE to an embedded
SQLite database (`EpisodeStore`) the moment it finishes, so a kill -9 loses at most the episodes in
flight; running the same campaign again skips every stored index. Rows are never overwritten: an
'errored' row is final too (rerun under a new campaign id to try those items again). The runner knows
nothing about twins or scenarios; the caller supplies `fn`, the items and a `spec` (a JSON dict saying
what the campaign is), and resuming requires the same spec.

Backends, all giving identical rows (rows are keyed by index and `fn` is deterministic, so worker
count and completion order do not matter):
- "inline": this process, one item at a time, for debugging and tests (a dying episode takes the
  runner with it; the rows stored so far stay);
- "pool": *spawned* processes (PyBullet and torch state must not be forked), each with its own pipe and
  one item at a time, and a bounded number of items queued so a huge campaign is not queued all at once;
- "ray": Ray tasks. If Ray is not initialised the runner starts a local one (`local_ray`), listening
  on 127.0.0.1 only, and shuts it down afterwards; an already initialised Ray (a cluster) is used as is.

Contract for the episode function:
- a module-level function in a module the workers can import (spawned processes get the parent's
  sys.path; Ray workers get the driver's script directory and working directory). A script that runs
  a "pool" campaign needs the `if __name__ == "__main__":` guard: spawned workers import the script;
- deterministic in its payload, which it receives decoded from the stored JSON (tuples arrive as
  lists), on every backend alike;
- returns a JSON-serialisable dict; a bool key "failed" is counted in the progress note;
- worker processes are reused across items, so expensive setup (a simulator, a policy) belongs in a
  `functools.lru_cache`-d helper that builds it once per process. Nothing set up in the parent
  reaches a worker except the payload.

Failures: an exception in `fn` is retried up to `retries` times, then stored as 'errored' with its type,
message and a short traceback (never replaced by another result). A worker process that dies (os._exit,
SIGKILL, a segfault in a simulator) is charged to the item it held, and only to it: the pool knows which
process held which item, and Ray reports the dead task directly. The dead process is replaced; an item
whose worker died more than `retries` times is stored as 'errored' with 'worker died' and the exit code
or signal. A failure outside `fn` (the function cannot be loaded in a worker) stops the run with
`CampaignError`, storing nothing for it.

Why these tools: `sqlite3` is in the standard library, one file per database, and WAL mode lets another
process read rows (a report, a dashboard) while the campaign writes. The pool is our own ~100 lines over
`multiprocessing` pipes because `concurrent.futures.ProcessPoolExecutor` cannot say which item killed a
worker and can deadlock shutting down after one died on Python 3.11 (see `_Pool`). No library combines
per-episode durable rows with crash attribution, hence this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import sqlite3
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from twin.core.progress import Progress, progress_stage

EpisodeFn = Callable[[Any], dict]
"""`fn(payload) -> dict`: one episode, module-level and deterministic (see the module docstring)."""

STATUSES = ("ok", "errored")
BACKENDS = ("inline", "pool", "ray")
WORKER_DIED = "worker died"
_SCHEMA_VERSION = 1
_ERROR_CHARS = 4000
"""Stored error texts are cut to this length: enough for the message and a short traceback."""
_TRACEBACK_FRAMES = 4
"""The innermost frames kept in an errored row's traceback."""
_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Set before Ray is imported: no usage report, no token auth, and (the last one, read at import) every
socket of a local Ray on 127.0.0.1 instead of all interfaces."""
_LOOPBACK = "127.0.0.1"
_SQLITE_INT = 2**63
_SCHEMA = """
CREATE TABLE IF NOT EXISTS campaigns (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS episodes (
    campaign TEXT NOT NULL REFERENCES campaigns(id),
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    payload TEXT NOT NULL,
    result TEXT,
    error TEXT,
    worker TEXT NOT NULL,
    seconds REAL NOT NULL,
    finished REAL NOT NULL,
    PRIMARY KEY (campaign, idx)
);
"""
_COLUMNS = "campaign, idx, status, attempts, payload, result, error, worker, seconds, finished"


class CampaignError(RuntimeError):
    """A campaign cannot be run or stored as asked (spec mismatch, duplicate row, unloadable function)."""


def dumps(value: Any) -> str:
    """The one JSON encoding of payloads, results and specs: sorted keys, so equal values give equal
    text (spec comparison and byte-identical rows rely on it). NaN and inf are kept (Python's JSON
    reads them back) because a metric may legitimately be nan."""
    return json.dumps(value, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class EpisodeRow:
    """One finished episode, as stored."""

    campaign: str
    """Id of the campaign the episode belongs to."""
    index: int
    """The work item's index, unique within the campaign."""
    status: str
    """'ok' (fn returned a result) or 'errored' (fn raised, or its worker died, on every attempt)."""
    attempts: int
    """Attempts charged to this item: its own exceptions and the deaths of the workers that held it."""
    payload: Any
    """The item's payload as stored (JSON, usually a dict)."""
    result: dict | None
    """What fn returned (status 'ok'); None when errored."""
    error: str | None
    """Exception type, message and short traceback, or 'worker died: ...' (status 'errored'); else None."""
    worker: str
    """'hostname:pid' of the process that ran the last attempt; 'hostname:?' when that worker died."""
    seconds: float
    """Wall time of the last attempt (for a death: from submission until the death was noticed)."""
    finished: float
    """Unix time the last attempt ended."""

    def __post_init__(self) -> None:
        if not isinstance(self.campaign, str) or not self.campaign:
            raise ValueError(f"campaign must be a non-empty string, got {self.campaign!r}")
        _check_index(self.index)
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.status == "ok" and (not isinstance(self.result, dict) or self.error is not None):
            raise ValueError(f"an 'ok' row needs a dict result and no error (index {self.index})")
        if self.status == "errored" and (self.result is not None or not self.error):
            raise ValueError(f"an 'errored' row needs an error text and no result (index {self.index})")
        if not self.seconds >= 0.0 or not self.finished > 0.0:
            raise ValueError(f"seconds must be >= 0 and finished > 0, got {self.seconds}, {self.finished}")


def _check_index(index: Any) -> None:
    if isinstance(index, bool) or not isinstance(index, int) or not -_SQLITE_INT <= index < _SQLITE_INT:
        raise ValueError(f"an episode index must be an int that fits SQLite's 64 bits, got {index!r}")


class EpisodeStore:
    """Campaigns and their episode rows in one SQLite file (WAL mode: readers never block the writer).

    Each `put` is its own committed transaction, synced to disk: a kill, or a power cut, loses at most
    the episodes still in flight. Use one store per process; other processes may read the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) == ":memory:":
            raise ValueError("EpisodeStore needs a file path: an in-memory database cannot be resumed")
        # isolation_level=None: autocommit, so every INSERT is committed when execute returns.
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise CampaignError(f"{self.path}: SQLite refused WAL journal mode ({mode}); use a local file system")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA_VERSION):
            raise CampaignError(f"{self.path} has episode-store schema version {version}; this code reads "
                                f"version {_SCHEMA_VERSION}: use a new file")
        self._db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version={_SCHEMA_VERSION}; COMMIT;")

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_campaign(self, campaign_id: str, spec: dict) -> None:
        """Create the campaign, or check that the stored one has this very spec (resuming)."""
        if not isinstance(campaign_id, str) or not campaign_id:
            raise ValueError(f"campaign_id must be a non-empty string, got {campaign_id!r}")
        if not isinstance(spec, dict):
            raise ValueError(f"spec must be a dict, got {type(spec).__name__}")
        text = _json_or_raise(spec, f"the spec of campaign {campaign_id!r}")
        stored = self._db.execute("SELECT spec FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
        if stored is None:
            self._db.execute("INSERT INTO campaigns (id, spec, created) VALUES (?, ?, ?)", (campaign_id, text, time.time()))
        elif stored[0] != text:
            raise CampaignError(f"campaign {campaign_id!r} in {self.path} is stored with a different spec:\n"
                                f"  stored: {stored[0]}\n  given:  {text}\n"
                                "resuming needs the same spec; pick a new campaign id to run a different one")

    def spec(self, campaign_id: str) -> dict:
        """The stored spec of a campaign."""
        stored = self._db.execute("SELECT spec FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
        if stored is None:
            raise CampaignError(f"no campaign {campaign_id!r} in {self.path}; known: {self.campaigns()}")
        return json.loads(stored[0])

    def done(self, campaign_id: str) -> set[int]:
        """Indices with a stored row ('ok' or 'errored')."""
        return {idx for (idx,) in self._db.execute("SELECT idx FROM episodes WHERE campaign = ?", (campaign_id,))}

    def put(self, campaign_id: str, row: EpisodeRow) -> None:
        """Store one row and commit. A row already stored for this index is an error, never overwritten."""
        if row.campaign != campaign_id:
            raise ValueError(f"row of campaign {row.campaign!r} put into campaign {campaign_id!r}")
        values = (campaign_id, row.index, row.status, row.attempts, dumps(row.payload),
                  None if row.result is None else dumps(row.result), row.error, row.worker, row.seconds, row.finished)
        try:
            self._db.execute(f"INSERT INTO episodes ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
        except sqlite3.IntegrityError as exc:
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_CONSTRAINT_FOREIGNKEY":
                raise CampaignError(f"campaign {campaign_id!r} is not in {self.path}: open_campaign it first") from exc
            raise CampaignError(f"episode {row.index} of campaign {campaign_id!r} is already stored in {self.path}; "
                                "rows are never overwritten (is another runner working on the same campaign?)") from exc

    def rows(self, campaign_id: str) -> list[EpisodeRow]:
        """Every stored row of the campaign, in index order."""
        cursor = self._db.execute(f"SELECT {_COLUMNS} FROM episodes WHERE campaign = ? ORDER BY idx", (campaign_id,))
        return [EpisodeRow(campaign=c, index=i, status=s, attempts=a, payload=json.loads(p),
                           result=None if r is None else json.loads(r), error=e, worker=w, seconds=sec, finished=f)
                for c, i, s, a, p, r, e, w, sec, f in cursor]

    def campaigns(self) -> list[str]:
        """Ids of the stored campaigns, sorted."""
        return [cid for (cid,) in self._db.execute("SELECT id FROM campaigns ORDER BY id")]


def _json_or_raise(value: Any, what: str) -> str:
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable (dicts with str keys, lists, str, numbers, bools, None): "
                         f"{exc}") from exc


# --- what a worker runs -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Outcome:
    """What one attempt in a worker sends back: a result (JSON text) or an error text."""

    index: int
    """The item's index."""
    result: str | None
    """fn's result as canonical JSON, or None if fn raised."""
    error: str | None
    """Type, message and short traceback of fn's exception, or None."""
    worker: str
    """'hostname:pid' of the process that ran it."""
    seconds: float
    """Wall time of the attempt."""
    finished: float
    """Unix time it ended."""


@dataclasses.dataclass(frozen=True)
class _Death:
    """The worker running an item died (no outcome came back)."""

    reason: str
    """'worker died: ...' with what the backend said (exit code, signal, Ray's error)."""
    worker: str
    """'hostname:pid' of the dead process, or 'hostname:?' where the backend does not say."""


def _attempt(fn: EpisodeFn, index: int, payload: str) -> _Outcome:
    """Run fn on one item; an exception in fn becomes an error text, anything else propagates."""
    start = time.perf_counter()
    result = error = None
    try:
        value = fn(json.loads(payload))
        if not isinstance(value, dict):
            raise TypeError(f"the episode function returned {type(value).__name__}, not a dict")
        result = dumps(value)
    except Exception as exc:  # fn's failure is data to store, not a reason to stop the campaign
        error = _describe(exc)
    return _Outcome(index, result, error, _worker_name(), time.perf_counter() - start, time.time())


def _probe(fn: EpisodeFn) -> bool:
    """Sent once to a worker: unpickling the argument there proves fn's module is importable."""
    return callable(fn)


def _describe(exc: BaseException) -> str:
    lines = traceback.format_exception(exc, limit=-_TRACEBACK_FRAMES, chain=False)
    text = f"{type(exc).__qualname__}: {exc}\n" + "".join(lines)
    return text if len(text) <= _ERROR_CHARS else text[:_ERROR_CHARS] + "\n[cut]"


def _worker_name(pid: int | str | None = None) -> str:
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


# --- backends: submit items, collect what finished -----------------------------------------------------

@dataclasses.dataclass
class _Task:
    """An item on its way through the runner."""

    index: int
    """The item's index."""
    payload: str
    """Its payload as canonical JSON (what is stored and what the worker decodes)."""
    charged: int = 0
    """Failed attempts charged to it so far."""
    submitted: float = 0.0
    """time.monotonic() of the last submission (the wall time of an attempt whose worker died)."""


class _Backend(Protocol):
    def submit(self, task: _Task) -> None: ...

    def collect(self) -> list[tuple[_Task, _Outcome | _Death]]: ...

    def in_flight(self) -> list[_Task]: ...


class _Inline:
    def __init__(self, fn: EpisodeFn) -> None:
        self.fn, self.queue = fn, deque[_Task]()

    def submit(self, task: _Task) -> None:
        self.queue.append(task)

    def collect(self) -> list[tuple[_Task, _Outcome | _Death]]:
        task = self.queue.popleft()
        return [(task, _attempt(self.fn, task.index, task.payload))]

    def in_flight(self) -> list[_Task]:
        return list(self.queue)


@dataclasses.dataclass(eq=False)  # hashed by identity: a worker is a key in collect
class _Worker:
    """One spawned process of the pool, with its own pipe, and the task it holds (None when idle)."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    task: _Task | None = None


def _pool_worker(conn: Connection, fn_bytes: bytes) -> None:
    """The loop of one pool process: load fn and say whether that worked, then run the items sent down its
    pipe, one at a time, until told to stop (None) or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    try:
        fn = pickle.loads(fn_bytes)
    except BaseException as exc:  # noqa: BLE001 - any failure to load is reported, then this process ends
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        conn.send(_attempt(fn, *message))


def _exit_text(process: multiprocessing.process.BaseProcess) -> str:
    process.join(timeout=5.0)
    code = process.exitcode
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class _Pool:
    """Spawned processes (PyBullet and torch state must not be forked), one pipe and one item each at a
    time, so a process that dies is pinned on the item it held and no other item is charged.

    Not `concurrent.futures.ProcessPoolExecutor`: a death breaks the whole executor without saying which
    item caused it, and shutting down a broken one can deadlock on Python 3.11 (CPython gh-125451, fixed
    in 3.12 only), which hung a CI run of this suite."""

    def __init__(self, fn: EpisodeFn, workers: int) -> None:
        self.fn, self._fn_bytes = fn, pickle.dumps(fn)
        self.pending: deque[_Task] = deque()
        self.workers: list[_Worker] = []
        try:
            # Start every process before waiting for any: they load fn side by side.
            self.workers = [self._spawn() for _ in range(workers)]
            for worker in self.workers:
                self._await_ready(worker)
        except BaseException:
            self.close()
            raise

    def _spawn(self) -> _Worker:
        ours, theirs = multiprocessing.get_context("spawn").Pipe(duplex=True)
        process = multiprocessing.get_context("spawn").Process(
            target=_pool_worker, args=(theirs, self._fn_bytes), daemon=True, name="shakedown-campaign-worker")
        process.start()
        theirs.close()  # the child holds its end; with ours alone, a dead child reads as EOF
        return _Worker(process, ours)

    def _await_ready(self, worker: _Worker) -> None:
        try:
            status, detail = worker.conn.recv()
        except (EOFError, OSError):
            status, detail = "failed", f"the process ended before loading it ({_exit_text(worker.process)})"
        if status != "ready":
            raise CampaignError(f"the episode function {_name(self.fn)} could not be loaded in a spawned worker: "
                                f"{detail}; it must be a module-level function of a module importable from the "
                                "parent's sys.path")

    def submit(self, task: _Task) -> None:
        task.submitted = time.monotonic()
        self.pending.append(task)
        self._dispatch()

    def _dispatch(self) -> None:
        for worker in self.workers:
            if not self.pending:
                return
            if worker.task is None:
                worker.task = self.pending.popleft()
                try:
                    worker.conn.send((worker.task.index, worker.task.payload))
                except OSError:  # it died while idle: the item never reached it and goes back first in line
                    self.pending.appendleft(worker.task)
                    worker.task = None

    def in_flight(self) -> list[_Task]:
        return [w.task for w in self.workers if w.task is not None] + list(self.pending)

    def collect(self) -> list[tuple[_Task, _Outcome | _Death]]:
        self._dispatch()
        by_handle = {w.conn: w for w in self.workers if w.task is not None}
        by_handle.update({w.process.sentinel: w for w in self.workers})
        out: list[tuple[_Task, _Outcome | _Death]] = []
        for worker in dict.fromkeys(by_handle[h] for h in wait_for(list(by_handle))):
            task, worker.task = worker.task, None
            if task is not None:
                try:  # a result, even one sent just before its process died; EOF if it died without one
                    out.append((task, worker.conn.recv()))
                    continue  # a death right after sending is seen by the next collect, with no item to charge
                except (EOFError, OSError):
                    pass
            worker.process.kill()  # a no-op if it is gone; ends one whose pipe closed while it was exiting
            reason = f"{WORKER_DIED}: {_exit_text(worker.process)}"
            if task is not None:
                out.append((task, _Death(reason, _worker_name(worker.process.pid))))
            self._replace(worker)
        self._dispatch()
        return out

    def _replace(self, dead: _Worker) -> None:
        dead.conn.close()
        fresh = self._spawn()
        self.workers[self.workers.index(dead)] = fresh
        self._await_ready(fresh)

    def close(self) -> None:
        """Idle workers are told to stop; busy ones (a run stopped early) are killed: their items are not stored,
        so a resume reruns them."""
        for worker in self.workers:
            with contextlib.suppress(OSError):
                if worker.task is None:
                    worker.conn.send(None)
                else:
                    worker.process.kill()
        for worker in self.workers:
            worker.process.join(timeout=5.0)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self.workers = []


class _Ray:
    def __init__(self, fn: EpisodeFn, ray: ModuleType) -> None:
        self.fn, self.ray = fn, ray
        self.remote = ray.remote(max_retries=0, num_cpus=1)(_attempt)
        self.refs: dict[Any, _Task] = {}
        self.fn_ref = ray.put(fn)
        try:
            ray.get(ray.remote(max_retries=0, num_cpus=1)(_probe).remote(self.fn_ref))
        except ray.exceptions.RayError as exc:
            raise CampaignError(f"the episode function {_name(fn)} could not be loaded in a Ray worker: "
                                f"{_first_line(exc)}; it must be a module-level function of a module Ray workers "
                                "can import (installed, or under the driver's working directory)") from exc

    def submit(self, task: _Task) -> None:
        task.submitted = time.monotonic()
        self.refs[self.remote.remote(self.fn_ref, task.index, task.payload)] = task

    def in_flight(self) -> list[_Task]:
        return list(self.refs.values())

    def collect(self) -> list[tuple[_Task, _Outcome | _Death]]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        out: list[tuple[_Task, _Outcome | _Death]] = []
        for ref in ready:
            task = self.refs.pop(ref)
            try:
                out.append((task, self.ray.get(ref)))
            except self.ray.exceptions.RayError as exc:  # WorkerCrashedError, RayTaskError, OutOfMemoryError, ...
                out.append((task, _Death(f"{WORKER_DIED}: {type(exc).__name__}: {_first_line(exc)}", _worker_name("?"))))
        return out

    def close(self) -> None:
        for ref in self.refs:  # only left when the run stopped early (an exception, Ctrl-C)
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)


def _name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:500] if lines else type(exc).__name__


def import_ray() -> ModuleType:
    """Ray, imported with `_RAY_ENV` in the environment (set here, before the import reads it). A variable
    the caller set explicitly is respected; `local_ray` still refuses a Ray that is not on 127.0.0.1."""
    for name, value in _RAY_ENV.items():
        os.environ.setdefault(name, value)
    import ray

    return ray


@contextlib.contextmanager
def local_ray(num_cpus: int) -> Iterator[ModuleType]:
    """Start Ray on this machine, every socket on 127.0.0.1, and shut it down on exit.

    Raises CampaignError if Ray is already initialised, or if it came up on another address (Ray was
    imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set: import it through `import_ray`)."""
    ray = import_ray()
    if ray.is_initialized():
        raise CampaignError("Ray is already initialised; use it as is or ray.shutdown() it first")
    ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=200 * 1024**2,
             logging_level=logging.WARNING)
    try:
        node_ip = ray.util.get_node_ip_address()
        gcs_host = ray.get_runtime_context().gcs_address.rsplit(":", 1)[0]
        if {node_ip, gcs_host} != {_LOOPBACK}:
            raise CampaignError(f"local Ray came up on {node_ip} (GCS {gcs_host}), not {_LOOPBACK} only: it would listen "
                                "on the network. Import ray only through scenarios.campaign.import_ray (it sets "
                                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before the import), or set that variable yourself")
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def open_backend(name: str, fn: EpisodeFn, workers: int) -> Iterator[_Backend]:
    """Workers kept for several `run_campaign` calls (pass it as `executor`): a study that runs many small
    batches then pays the process start-up and each worker's world set-up once, not per batch."""
    if name == "inline":
        yield _Inline(fn)
        return
    try:
        pickle.dumps(fn)
    except Exception as exc:
        raise CampaignError(f"backend {name!r} sends the episode function to other processes, but {_name(fn)} "
                            f"cannot be pickled ({exc}): make it a module-level function") from exc
    if name == "pool":
        pool = _Pool(fn, workers)
        try:
            yield pool
        finally:
            pool.close()
        return
    ray = import_ray()
    with contextlib.ExitStack() as stack:
        if not ray.is_initialized():
            stack.enter_context(local_ray(workers))
        runner = _Ray(fn, ray)
        try:
            yield runner
        finally:
            runner.close()


# --- the runner ----------------------------------------------------------------------------------------

class _Tally:
    """Counts behind the progress note."""

    def __init__(self) -> None:
        self.failed = self.errored = 0
        self.reports_failed = False

    def add(self, row: EpisodeRow) -> None:
        self.errored += row.status == "errored"
        failed = (row.result or {}).get("failed")
        if isinstance(failed, bool):
            self.reports_failed = True
            self.failed += failed

    def note(self) -> str:
        parts = ([f"{self.failed} failed"] if self.reports_failed else []) + ([f"{self.errored} errored"] if self.errored else [])
        return ", ".join(parts)


def _settle(campaign_id: str, task: _Task, got: _Outcome | _Death, retries: int) -> EpisodeRow | None:
    """The row to store for a finished attempt, or None when the task goes back into the queue."""
    if isinstance(got, _Outcome) and got.error is None:
        return EpisodeRow(campaign_id, task.index, "ok", task.charged + 1, json.loads(task.payload),
                          json.loads(got.result), None, got.worker, got.seconds, got.finished)
    task.charged += 1
    if task.charged <= retries:
        return None
    if isinstance(got, _Outcome):
        return EpisodeRow(campaign_id, task.index, "errored", task.charged, json.loads(task.payload),
                          None, got.error, got.worker, got.seconds, got.finished)
    return EpisodeRow(campaign_id, task.index, "errored", task.charged, json.loads(task.payload), None,
                      got.reason, got.worker, time.monotonic() - task.submitted, time.time())


def _fill(backend: _Backend, queue: deque[_Task], limit: int) -> None:
    """Submit queued tasks up to `limit` in flight."""
    while queue and len(backend.in_flight()) < limit:
        backend.submit(queue.popleft())


def _tasks(items: Sequence[tuple[int, Any]]) -> list[_Task]:
    tasks, seen = [], set()
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ValueError(f"items must be (index, payload) pairs, got {item!r}")
        index, payload = item
        _check_index(index)
        if index in seen:
            raise ValueError(f"index {index} appears twice among the items; every episode needs its own index")
        seen.add(index)
        tasks.append(_Task(index, _json_or_raise(payload, f"the payload of item {index}")))
    return tasks


def run_campaign(fn: EpisodeFn, items: Sequence[tuple[int, Any]], store: EpisodeStore, campaign_id: str, spec: dict,
                 backend: str = "pool", workers: int = 2, retries: int = 1,
                 progress: Progress | None = None, executor: _Backend | None = None) -> list[EpisodeRow]:
    """Run every item whose index is not stored yet, storing each row as it finishes; return ALL rows of
    the campaign in index order. `items` are (index, JSON-serialisable payload); `spec` describes the
    campaign and must match the stored one when resuming. See the module docstring for the backends and
    how exceptions and dying workers are retried (`retries` times) and stored. `executor`: workers opened
    with `open_backend` for the same fn (then `backend` only names them)."""
    if executor is not None and executor.fn is not fn:
        raise CampaignError("the executor was opened for another episode function; open one per function")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    tasks = _tasks(items)
    store.open_campaign(campaign_id, spec)
    stored = {row.index: row for row in store.rows(campaign_id)}
    tally = _Tally()
    for task in tasks:
        if task.index in stored:
            if dumps(stored[task.index].payload) != task.payload:
                raise CampaignError(f"episode {task.index} of campaign {campaign_id!r} is stored with payload "
                                    f"{dumps(stored[task.index].payload)}, now given {task.payload}: the items changed "
                                    "under the same spec; put what generates the items into the spec, or use a new id")
            tally.add(stored[task.index])
    queue = deque(task for task in tasks if task.index not in stored)
    # Enough in flight to keep workers busy (Ray pays a scheduling round trip per task: keep more queued), not the
    # whole campaign.
    limit = 1 if backend == "inline" else (4 if backend == "ray" else 2) * workers
    with progress_stage(progress, f"campaign {campaign_id}", total=len(tasks), completed=len(tasks) - len(queue)) as bar:
        if queue:
            with contextlib.nullcontext(executor) if executor is not None else open_backend(backend, fn, workers) as runner:
                while queue or runner.in_flight():
                    _fill(runner, queue, limit)
                    for task, got in runner.collect():
                        row = _settle(campaign_id, task, got, retries)
                        if row is None:
                            queue.appendleft(task)  # retries go first
                            continue
                        store.put(campaign_id, row)
                        tally.add(row)
                        bar.advance(note=tally.note())
    return store.rows(campaign_id)
