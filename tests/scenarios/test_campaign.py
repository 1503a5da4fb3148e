"""The campaign runner: identical rows on every backend, errors and dying workers stored as 'errored'
without touching other rows, resume after kill -9 with every episode exactly once, and the store's
refusals (spec changed, payload changed, duplicate row). Ray runs once for the whole file, locally."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios.campaign import (
    WORKER_DIED,
    CampaignError,
    EpisodeRow,
    EpisodeStore,
    _Task,
    dumps,
    import_ray,
    local_ray,
    open_backend,
    run_campaign,
)
from tests.scenarios.campaign_fns import counted, crashing, raising, toy
from twin.core.progress import NullProgress

REPO = Path(__file__).resolve().parents[2]
SPEC = {"what": "toy", "version": 1}
QUIET = NullProgress()
# Item 0 sleeps long while the rest are short: with two workers, later items finish before it.
ITEMS = [(i, {"x": i, "sleep": 0.5 if i == 0 else 0.02 * (i % 3)}) for i in range(10)]


@pytest.fixture(scope="module")
def ray_up():
    """One local Ray (2 CPUs, 127.0.0.1 only) for every Ray test of this file."""
    try:
        import_ray()
    except ImportError:
        pytest.skip("ray is not installed")
    with local_ray(2) as ray:
        yield ray


@pytest.fixture(params=["inline", "pool", "ray"])
def backend(request) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_up")
    return request.param


@pytest.fixture
def store(tmp_path):
    with EpisodeStore(tmp_path / "episodes.sqlite") as opened:
        yield opened


def expected(fn, items) -> dict[int, dict]:
    return {i: fn({**payload, "sleep": 0.0}) for i, payload in items}


def raw_rows(path: Path) -> list[tuple]:
    """Every column of every stored episode, as SQLite holds it."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM episodes ORDER BY campaign, idx").fetchall()


def test_every_backend_gives_the_same_rows(backend, store):
    rows = run_campaign(toy, ITEMS, store, "same", SPEC, backend=backend, workers=2, progress=QUIET)
    assert [(r.index, r.status, r.attempts, r.result, r.error) for r in rows] == \
        [(i, "ok", 1, result, None) for i, result in expected(toy, ITEMS).items()]
    assert [r.payload for r in rows] == [payload for _, payload in ITEMS]
    assert rows == store.rows("same")
    finish_order = [r.index for r in sorted(rows, key=lambda r: r.finished)]
    if backend == "inline":
        assert finish_order == sorted(finish_order)
    else:  # the long item 0 ran alongside the short ones, yet the rows are in index order
        assert finish_order != sorted(finish_order)
        workers = {r.worker for r in rows}
        assert len(workers) == 2 if backend == "pool" else len(workers) >= 2


def test_an_exception_is_retried_then_stored_as_errored(backend, store):
    items = [(i, {"x": i, "bad": i == 3}) for i in range(6)]
    rows = {r.index: r for r in run_campaign(raising, items, store, "raise", SPEC, backend=backend, retries=2, progress=QUIET)}
    bad = rows.pop(3)
    assert (bad.status, bad.attempts, bad.result) == ("errored", 3, None)
    assert bad.error.startswith("ValueError: bad item 3\n") and "Traceback" in bad.error and "raising" in bad.error
    want = expected(toy, items)
    assert {i: (r.status, r.attempts, r.result) for i, r in rows.items()} == {i: ("ok", 1, want[i]) for i in rows}


@pytest.mark.parametrize("backend_name", ["pool", "ray"])
def test_a_dying_worker_is_stored_as_errored_and_spares_the_others(backend_name, request, store):
    if backend_name == "ray":
        request.getfixturevalue("ray_up")
    # Every death costs Ray a new worker process (~1 s here), so Ray gets one crashing item.
    crash = {2: "exit", 5: "kill"} if backend_name == "pool" else {5: "kill"}
    items = [(i, {"x": i, "crash": crash.get(i), "sleep": 0.05}) for i in range(8)]
    rows = {r.index: r for r in run_campaign(crashing, items, store, "crash", SPEC, backend=backend_name, retries=1,
                                             progress=QUIET)}
    assert sorted(rows) == list(range(8))
    for i in crash:
        assert (rows[i].status, rows[i].attempts, rows[i].result) == ("errored", 2, None)
        assert rows[i].error.startswith(WORKER_DIED)
    if backend_name == "pool":  # the pool knows the dead process and how it ended
        assert rows[2].error == f"{WORKER_DIED}: exit code 1" and rows[5].error == f"{WORKER_DIED}: killed by SIGKILL"
        for i in crash:  # the row names the process that died, and it is gone
            with pytest.raises(ProcessLookupError):
                os.kill(int(rows[i].worker.rsplit(":", 1)[1]), 0)
    else:
        assert rows[5].worker.endswith(":?")
    want = expected(toy, items)
    # A death is charged to the item its worker held and to no other.
    assert {i: (r.status, r.attempts, r.result) for i, r in rows.items() if i not in crash} == \
        {i: ("ok", 1, want[i]) for i in rows if i not in crash}


def test_a_run_stopped_early_leaves_no_worker_behind():
    """An exception in the runner (Ctrl-C, a bug) closes the pool: the busy worker is killed, the idle one told to
    stop; neither outlives the run, and nothing was stored for the item in flight (a resume reruns it)."""
    with pytest.raises(RuntimeError, match="stop"), open_backend("pool", toy, 2) as pool:
        pids = [w.process.pid for w in pool.workers]
        pool.submit(_Task(0, dumps({"x": 0, "sleep": 30.0})))
        assert [t.index for t in pool.in_flight()] == [0]
        raise RuntimeError("stop")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_worker_that_dies_idle_is_replaced_and_charges_no_item(store):
    with open_backend("pool", toy, 2) as pool:
        victim = pool.workers[0].process
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(5)
        rows = run_campaign(toy, ITEMS[1:], store, "idle", SPEC, backend="pool", progress=QUIET, executor=pool)
        assert victim not in [w.process for w in pool.workers] and all(w.process.is_alive() for w in pool.workers)
    assert [(r.status, r.attempts) for r in rows] == [("ok", 1)] * (len(ITEMS) - 1)


KILLED_RUN = """
from scenarios.campaign import EpisodeStore, run_campaign
from tests.scenarios.campaign_fns import toy
from twin.core.progress import NullProgress
items = [(i, {{"x": i, "sleep": {sleep}}}) for i in range({n})]
run_campaign(toy, items, EpisodeStore({db!r}), "killed", {spec!r}, backend="pool", workers=2, progress=NullProgress())
raise SystemExit("the campaign finished before the test killed it")
"""


def test_resume_after_kill_9_runs_every_episode_exactly_once(tmp_path):
    n, sleep, db = 14, 0.25, tmp_path / "killed.sqlite"
    code = textwrap.dedent(KILLED_RUN.format(n=n, sleep=sleep, db=str(db), spec=SPEC))
    runner = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60.0
        while len(_stored(db)) < 3:
            assert runner.poll() is None, runner.stderr.read().decode()
            assert time.monotonic() < deadline, "the campaign stored nothing within 60 s"
            time.sleep(0.05)
    finally:
        os.killpg(runner.pid, signal.SIGKILL)  # the runner and its spawned workers, all at once
        runner.wait()
    before = raw_rows(db)
    assert 3 <= len(before) < n
    with EpisodeStore(db) as store:
        items = [(i, {"x": i, "sleep": sleep}) for i in range(n)]
        rows = run_campaign(toy, items, store, "killed", SPEC, backend="pool", workers=2, progress=QUIET)
    after = raw_rows(db)
    assert [r.index for r in rows] == list(range(n))
    assert [row[1] for row in after] == list(range(n))
    assert all(r.status == "ok" and r.result == toy({"x": r.index}) for r in rows)
    assert [row for row in after if row[1] in {b[1] for b in before}] == before


def _stored(db: Path) -> list[int]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5.0) as conn:
            return [i for (i,) in conn.execute("SELECT idx FROM episodes")]
    except sqlite3.OperationalError:  # the tables are not created yet
        return []


def test_a_second_run_of_a_finished_campaign_does_nothing(store, tmp_path):
    log = tmp_path / "calls.txt"
    items = [(i, {"x": i, "log": str(log)}) for i in range(5)]
    first = run_campaign(counted, items, store, "twice", SPEC, backend="inline", progress=QUIET)
    second = run_campaign(counted, items, store, "twice", SPEC, backend="pool", progress=QUIET)
    assert second == first  # finished timestamps and workers included
    assert sorted(int(line) for line in log.read_text().split()) == list(range(5))


def test_resuming_with_another_spec_or_payload_is_refused(store):
    items = [(i, {"x": i}) for i in range(3)]
    run_campaign(toy, items, store, "fixed", SPEC, backend="inline", progress=QUIET)
    with pytest.raises(CampaignError, match="different spec"):
        run_campaign(toy, items, store, "fixed", {**SPEC, "version": 2}, backend="inline", progress=QUIET)
    with pytest.raises(CampaignError, match="episode 1 .* different payload|payload .* now given"):
        run_campaign(toy, [(0, {"x": 0}), (1, {"x": 10})], store, "fixed", SPEC, backend="inline", progress=QUIET)
    assert [r.result for r in store.rows("fixed")] == [toy(p) for _, p in items]


def test_the_store_never_overwrites_a_row(store, tmp_path):
    rows = run_campaign(toy, [(0, {"x": 0})], store, "once", SPEC, backend="inline", progress=QUIET)
    with pytest.raises(CampaignError, match="already stored"):
        store.put("once", rows[0])
    with pytest.raises(CampaignError, match="open_campaign"):
        store.put("nowhere", EpisodeRow("nowhere", 0, "ok", 1, {}, {}, None, "h:1", 0.0, 1.0))
    assert store.rows("once") == rows
    store.open_campaign("other", {})
    assert store.campaigns() == ["once", "other"]
    with EpisodeStore(store.path) as reopened:
        assert reopened.rows("once") == rows and reopened.spec("once") == SPEC
        assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_progress_counts_resumed_episodes_failures_and_errors(store):
    class Recorder(NullProgress):
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def start(self, description: str, total: int, completed: int = 0) -> None:
            self.calls.append(("start", description, total, completed))

        def advance(self, steps: int = 1, note: str = "") -> None:
            self.calls.append(("advance", steps, note))

    items = [(i, {"x": i, "bad": i == 4}) for i in range(6)]
    run_campaign(raising, items[:3], store, "shown", SPEC, backend="inline", progress=QUIET)
    bar = Recorder()
    run_campaign(raising, items, store, "shown", SPEC, backend="inline", retries=0, progress=bar)
    # x % 3 == 0 fails: 0 was stored before, 3 runs now; 4 raises.
    assert bar.calls == [("start", "campaign shown", 6, 3), ("advance", 1, "2 failed"),
                         ("advance", 1, "2 failed, 1 errored"), ("advance", 1, "2 failed, 1 errored")]


def test_bad_arguments_are_refused_with_the_reason(store, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="twice"):
        run_campaign(toy, [(1, {"x": 1}), (1, {"x": 2})], store, "bad", SPEC, backend="inline")
    with pytest.raises(ValueError, match="JSON"):
        run_campaign(toy, [(1, {"x": {1, 2}})], store, "bad", SPEC, backend="inline")
    with pytest.raises(ValueError, match="index"):
        run_campaign(toy, [(True, {"x": 1})], store, "bad", SPEC, backend="inline")
    with pytest.raises(ValueError, match="backend"):
        run_campaign(toy, [], store, "bad", SPEC, backend="threads")
    with pytest.raises(ValueError, match="status"):
        EpisodeRow("c", 0, "fine", 1, {}, {}, None, "h:1", 0.0, 1.0)
    with pytest.raises(ValueError, match="file path"):
        EpisodeStore(":memory:")
    # A lambda runs inline but cannot be sent to a worker.
    assert run_campaign(lambda p: {"y": p["x"]}, [(0, {"x": 7})], store, "lambda", SPEC, backend="inline",
                        progress=QUIET)[0].result == {"y": 7}
    with pytest.raises(CampaignError, match="module-level"):
        run_campaign(lambda p: {}, [(0, {})], store, "lambda2", SPEC, backend="pool", progress=QUIET)
    # A module the spawned workers cannot import: refused before any row is stored.
    (tmp_path / "gone_module.py").write_text("def episode(payload):\n    return {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_module

    monkeypatch.undo()
    with pytest.raises(CampaignError, match="could not be loaded"):
        run_campaign(gone_module.episode, [(0, {})], store, "gone", SPEC, backend="pool", progress=QUIET)
    assert store.rows("gone") == []


@settings(max_examples=30, deadline=None)
@given(data=st.data(), indices=st.lists(st.integers(-1000, 1000), unique=True, max_size=12))
def test_every_index_comes_back_exactly_once(data, indices):
    items = [(i, {"x": i * 7 % 11}) for i in indices]
    first = data.draw(st.lists(st.sampled_from(items), unique_by=lambda item: item[0]) if items else st.just([]))
    with tempfile.TemporaryDirectory() as tmp, EpisodeStore(Path(tmp) / "e.sqlite") as store:
        before = run_campaign(toy, first, store, "prop", SPEC, backend="inline", progress=QUIET)
        rows = run_campaign(toy, items, store, "prop", SPEC, backend="inline", progress=QUIET)
    assert [r.index for r in rows] == sorted(indices)
    assert all(r.status == "ok" and r.result == toy(r.payload) for r in rows)
    assert [r for r in rows if r.index in {i for i, _ in first}] == before



def test_real_episodes_give_the_same_rows_on_ray_and_on_the_pool(ray_up, tmp_path):
    """A study of real car episodes: same seed, same rows, whatever runs them (wall time aside)."""
    from scenarios.study import run_nominal

    text = Path("scenarios/library/car/friction-drop-before-corner.yaml").read_text()
    rows = {}
    for backend in ("pool", "ray"):
        result = run_nominal(text, EpisodeStore(tmp_path / f"{backend}.db"), 6, seed=4, backend=backend, workers=2,
                             progress=NullProgress())
        rows[backend] = [{k: v for k, v in e.items()} for e in result.episodes]
    assert rows["pool"] == rows["ray"] and len(rows["pool"]) == 6
    store = EpisodeStore(tmp_path / "pool.db")
    stored = store.rows(store.campaigns()[0])
    assert len({r.result["trace_hash"] for r in stored}) == 6  # six different episodes, each hashed
