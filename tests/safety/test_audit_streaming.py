"""Verify streams a log in chunks (bounded memory) and checks chunks on several processes; the
answer must not depend on how the log was cut: every report, tampered or not, equals the one
computed over the whole file at once. And a witness or a repair killed at any moment loses
nothing: a torn co-signature is moved aside, an unrecorded repair is recorded on the next open."""

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import safety.audit.verify as verify_module
from safety.audit.keys import generate, key_id, load_public
from safety.audit.log import AuditConfig, AuditLog, quarantine_torn_tail, read_lines
from safety.audit.verify import verify
from safety.audit.witness import HEADS, Witness, witnessed_heads

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def keypair(tmp_path):
    key = generate(tmp_path / "k.pem", tmp_path / "k.pub")
    return key, load_public(tmp_path / "k.pub")


def write(path: Path, key, n: int, every: int, pad: int = 0) -> None:
    with AuditLog(path, key, AuditConfig(checkpoint_every=every)) as log:
        for i in range(n):
            log.append("decision", {"i": i, "pad": "x" * (pad or (i * 37) % 300)})


def report_with(path: Path, public, chunk_bytes: int, workers: int, **kw):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(verify_module, "CHUNK_BYTES", chunk_bytes)
        return verify(path, public, workers=workers, **kw)


TAMPERINGS = ("none", "flip", "delete", "swap", "duplicate", "truncate", "blank")


def tamper(path: Path, how: str, at: float, where: float) -> bool:
    """Whether the file changed (a swap of a line with itself does not change it)."""
    data = original = path.read_bytes()
    lines = data.split(b"\n")[:-1]
    i = min(int(at * len(lines)), len(lines) - 1)
    j = min(i + 1 + int(where * 5), len(lines) - 1)
    if how == "flip":
        k = min(int(where * len(data)), len(data) - 2)
        data = data[:k] + bytes([data[k] ^ 0x01]) + data[k + 1:]
    elif how == "delete":
        data = b"".join(line + b"\n" for n, line in enumerate(lines) if n != i)
    elif how == "swap":
        lines[i], lines[j] = lines[j], lines[i]
        data = b"".join(line + b"\n" for line in lines)
    elif how == "duplicate":
        data = b"".join(line + b"\n" + (line + b"\n" if n == i else b"") for n, line in enumerate(lines))
    elif how == "truncate":
        data = data[:int(at * len(data))]
    elif how == "blank":
        lines.insert(i, b"")
        data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(data)
    return data != original


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 160), every=st.sampled_from([1, 3, 7, 50]), how=st.sampled_from(TAMPERINGS),
       at=st.floats(0, 1), where=st.floats(0, 1), chunk=st.integers(200, 3000), unsigned=st.booleans())
def test_chunked_and_parallel_verify_give_the_whole_files_answer(tmp_path_factory, n, every, how, at, where, chunk,
                                                                 unsigned):
    tmp = tmp_path_factory.mktemp("stream")
    key = generate(tmp / "k.pem", tmp / "k.pub")
    public = load_public(tmp / "k.pub")
    path = tmp / "a.log"
    write(path, key, n, every)
    changed = tamper(path, how, at, where)
    whole = report_with(path, public, 1 << 30, 1, allow_unsigned_tail=unsigned)
    assert report_with(path, public, chunk, 1, allow_unsigned_tail=unsigned) == whole
    assert report_with(path, public, chunk, 2, allow_unsigned_tail=unsigned) == whole
    if not changed:
        assert whole.ok, whole.summary()
    elif how in ("flip", "delete", "swap", "duplicate", "blank"):
        assert not whole.ok  # every edit of a written entry is caught, however the log is cut


def test_a_witnessed_prefix_inside_a_chunk_is_checked_the_same_way(tmp_path, keypair):
    key, public = keypair
    path = tmp_path / "a.log"
    write(path, key, 40, 7)
    Witness(tmp_path / "w").cosign(path, public)
    write(path, key, 200, 7)  # the same log, grown (AuditLog appends)
    for chunk, workers in ((1 << 30, 1), (500, 1), (500, 2)):
        report = report_with(path, public, chunk, workers, witness=tmp_path / "w")
        assert report.ok and report.witnessed == 1, report.summary()
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b'"i":3', b'"i":4')  # rewrite history before the witnessed head
    path.write_bytes(b"\n".join(lines))
    reports = [report_with(path, public, chunk, workers, witness=tmp_path / "w") for chunk, workers in
               ((1 << 30, 1), (500, 1), (500, 2))]
    assert not reports[0].ok and reports[0].problem.line == 4
    assert reports[1] == reports[0] and reports[2] == reports[0]


def test_verify_holds_a_bounded_amount_of_the_log_in_memory(tmp_path, keypair):
    key, public = keypair
    path = tmp_path / "big.log"
    write(path, key, 12_000, 100, pad=2000)  # about 25 MB
    size = path.stat().st_size
    assert size > 24e6
    tracemalloc.start()
    try:
        report = verify(path, public, workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.entries == 12_000 + 120
    # A block read, the chunk being checked and its lines: about 12 MB whatever the log's size
    # (holding the log, as verify did before, took more than twice its size).
    assert peak < 16e6, f"verify held {peak / 1e6:.1f} MB of a {size / 1e6:.0f} MB log"


# -- kill -9 during witness and repair ---------------------------------------------------------------
WITNESS_CHILD = """
import sys
from pathlib import Path
from safety.audit.keys import load_public
from safety.audit.witness import Witness
w = Witness(sys.argv[1])
public = load_public(sys.argv[3])
print("ready", flush=True)
while True:
    w.cosign(Path(sys.argv[2]), public)
    print("cosigned", flush=True)
"""


def test_kill_9_during_witnessing_leaves_a_usable_store(tmp_path, keypair):
    key, public = keypair
    log = tmp_path / "a.log"
    write(log, key, 30, 5)
    store = tmp_path / "store"
    Witness(store)  # its key exists before the child starts
    for trial in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WITNESS_CHILD, str(store), str(log), str(tmp_path / "k.pub")],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert proc.stdout.readline().strip() == "ready"
        for _ in range(3 + trial * 5):
            assert proc.stdout.readline().strip() == "cosigned"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # Every acknowledged co-signature is readable; a torn one (if the kill tore it) is not counted.
        seen = witnessed_heads(store, key_id(public))
        assert len(seen) >= 3 + trial * 5
        assert verify(log, public, witness=store).ok
        Witness(store).cosign(log, public)  # and the witness carries on
        assert read_lines(store / HEADS).torn_tail is None


def test_a_torn_co_signature_is_moved_aside_not_appended_onto(tmp_path, keypair):
    key, public = keypair
    log = tmp_path / "a.log"
    write(log, key, 12, 5)
    store = tmp_path / "store"
    Witness(store).cosign(log, public)
    offset = (store / HEADS).stat().st_size
    with open(store / HEADS, "ab") as f:
        f.write(b'{"log_key_id": "x", "tree')  # a witness killed mid-write
    Witness(store).cosign(log, public)
    assert (store / f"{HEADS}.torn-{offset}").read_bytes() == b'{"log_key_id": "x", "tree'
    assert len(witnessed_heads(store, key_id(public))) == 2


def test_a_repair_killed_before_recording_itself_is_recorded_on_the_next_open(tmp_path, keypair):
    key, public = keypair
    path = tmp_path / "a.log"
    write(path, key, 20, 5)
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b'{"body":{"i":20,"pad":"xx')  # a write cut off
    # The kill between "torn bytes kept aside and cut off" and "repair recorded":
    quarantine_torn_tail(path, size, b'{"body":{"i":20,"pad":"xx')
    assert path.stat().st_size == size
    with AuditLog(path, key):  # any open, not only a repair, records it
        pass
    entries = [json.loads(line) for line in read_lines(path).lines]
    repairs = [e for e in entries if e["kind"] == "repair"]
    assert len(repairs) == 1 and repairs[0]["body"]["torn_offset"] == size
    assert (tmp_path / f"a.log.torn-{size}").read_bytes() == b'{"body":{"i":20,"pad":"xx'
    assert verify(path, public).ok
    with AuditLog(path, key):  # and only once
        pass
    assert sum(json.loads(line)["kind"] == "repair" for line in read_lines(path).lines) == 1


def test_a_kill_between_a_checkpoint_and_its_head_is_caught_up_on_the_next_open(tmp_path, keypair, monkeypatch):
    """The 3 ms kill of the test below, made deterministic: the repair's closing checkpoint is written,
    the head file beside the log is not."""
    key, public = keypair
    path = tmp_path / "a.log"
    write(path, key, 40, 5)
    with open(path, "ab") as f:
        f.write(b'{"body":{"i":40,"thought":"cut here')
    with monkeypatch.context() as m:
        m.setattr(AuditLog, "_write_head", lambda self, body: (_ for _ in ()).throw(KeyboardInterrupt("killed")))
        with pytest.raises(KeyboardInterrupt):
            with AuditLog(path, key, repair=True):
                pass
    assert "older than the last checkpoint" in verify(path, public).problem.reason
    with AuditLog(path, key, repair=True):
        pass
    report = verify(path, public)
    # 48 + the repair record + its checkpoint, then the catch-up on the record and its checkpoint
    assert report.ok and report.entries == 52
    caught = [json.loads(line)["body"] for line in read_lines(path).lines if b'"kind":"head_caught_up"' in line]
    assert [(c["from_size"], c["to_size"]) for c in caught] == [(47, 49)]


REPAIR_CHILD = """
import sys
from safety.audit.keys import load_private
from safety.audit.log import AuditLog
key = load_private(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
with AuditLog(sys.argv[1], key, repair=True):
    pass
print("done", flush=True)
"""


@pytest.mark.parametrize("delay_ms", [0.0, 0.3, 1.0, 3.0])
def test_kill_9_during_repair_loses_nothing(tmp_path, keypair, delay_ms):
    key, public = keypair
    path = tmp_path / "a.log"
    write(path, key, 40, 5)
    size = path.stat().st_size
    torn = b'{"body":{"i":40,"thought":"cut here'
    with open(path, "ab") as f:
        f.write(torn)
    proc = subprocess.Popen([sys.executable, "-c", REPAIR_CHILD, str(path), str(tmp_path / "k.pem")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "ready"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    time.sleep(delay_ms / 1000)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with AuditLog(path, key, repair=True):  # whatever state the kill left: finish
        pass
    assert verify(path, public).ok
    assert (tmp_path / f"a.log.torn-{size}").read_bytes() == torn  # the torn bytes are kept
    repairs = [json.loads(line) for line in read_lines(path).lines if b'"kind":"repair"' in line]
    assert len(repairs) == 1 and repairs[0]["body"]["torn_offset"] == size
