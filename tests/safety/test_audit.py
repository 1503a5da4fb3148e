"""The audit log: every kind of tampering is detected, crashes lose at most the entry in flight."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safety.audit.keys import generate, load_public
from safety.audit.log import AuditConfig, AuditError, AuditLog, TornTailError, canonical, entry_hash
from safety.audit.search import Query, search
from safety.audit.verify import prove, verify, verify_proof


@pytest.fixture
def keypair(tmp_path):
    key = generate(tmp_path / "k.pem", tmp_path / "k.pub")
    return key, load_public(tmp_path / "k.pub")


def write_log(path: Path, key, n: int = 25, every: int = 5) -> None:
    with AuditLog(path, key, AuditConfig(checkpoint_every=every)) as log:
        for i in range(n):
            log.append("decision", {"i": i, "thought": f"step {i}: slow down", "costs": {"c": i % 3}})


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def rewrite(path: Path, new_lines: list[bytes]) -> None:
    path.write_bytes(b"".join(l + b"\n" for l in new_lines))


def test_clean_log_verifies_and_proves_inclusion(tmp_path, keypair):
    key, pub = keypair
    write_log(tmp_path / "a.log", key)
    report = verify(tmp_path / "a.log", pub)
    assert report.ok and report.entries == 30 and report.checkpoints == 5 and report.signed_entries == 30
    for seq in (0, 7, 24):
        proof = prove(tmp_path / "a.log", seq)
        assert verify_proof(proof, pub)
        bad = dict(proof, path=[("0" if p[0] != "0" else "1") + p[1:] for p in proof["path"]])
        assert not verify_proof(bad, pub)  # a flipped path hash fails
        assert not verify_proof(dict(proof, seq=seq + 1), pub)  # the wrong position fails
        forged = dict(proof, checkpoint=dict(proof["checkpoint"], tree_size=proof["tree_size"] + 1))
        assert not verify_proof(dict(forged, tree_size=proof["tree_size"] + 1), pub)  # wrong size fails


def test_bit_flip_is_detected_at_its_line(tmp_path, keypair):
    key, pub = keypair
    write_log(tmp_path / "a.log", key)
    ls = lines(tmp_path / "a.log")
    ls[9] = ls[9].replace(b'"i":8', b'"i":9')
    rewrite(tmp_path / "a.log", ls)
    report = verify(tmp_path / "a.log", pub)
    assert not report.ok and report.problem.line == 10 and "modified" in report.problem.reason
    assert report.good_entries == 9  # the entries before it stay trusted


def test_deleted_entry_is_detected(tmp_path, keypair):
    key, pub = keypair
    write_log(tmp_path / "a.log", key)
    ls = lines(tmp_path / "a.log")
    del ls[3]
    rewrite(tmp_path / "a.log", ls)
    report = verify(tmp_path / "a.log", pub)
    assert not report.ok and report.problem.line == 4 and "deleted" in report.problem.reason


def test_swapped_entries_are_detected(tmp_path, keypair):
    key, pub = keypair
    write_log(tmp_path / "a.log", key)
    ls = lines(tmp_path / "a.log")
    ls[2], ls[3] = ls[3], ls[2]
    rewrite(tmp_path / "a.log", ls)
    assert verify(tmp_path / "a.log", pub).problem.line == 3


def test_rewritten_chain_is_caught_by_the_signed_checkpoint(tmp_path, keypair):
    """An attacker edits an entry and recomputes every hash after it: only the signatures stop them."""
    key, pub = keypair
    write_log(tmp_path / "a.log", key)
    entries = [json.loads(l) for l in lines(tmp_path / "a.log")]
    entries[1]["body"]["thought"] = "speed up"
    prev = entries[0]["hash"]
    for e in entries[1:]:
        e["prev"] = prev
        if e["kind"] == "checkpoint":
            e["body"]["chain_head"] = prev
        e["hash"] = entry_hash(e)
        prev = e["hash"]
    rewrite(tmp_path / "a.log", [canonical(e) for e in entries])
    report = verify(tmp_path / "a.log", pub)
    assert not report.ok and "checkpoint" in report.problem.reason


def test_forged_checkpoint_signed_with_another_key_is_detected(tmp_path, keypair):
    key, pub = keypair
    write_log(tmp_path / "a.log", key)
    other = generate(tmp_path / "o.pem", tmp_path / "o.pub")
    ls = lines(tmp_path / "a.log")
    cp = json.loads(ls[5])
    assert cp["kind"] == "checkpoint"
    from safety.audit.log import head_payload
    cp["body"]["signature"] = other.sign(head_payload(cp["body"])).hex()
    cp["hash"] = entry_hash(cp)
    ls[5] = canonical(cp)
    rewrite(tmp_path / "a.log", ls)
    report = verify(tmp_path / "a.log", pub)
    assert not report.ok and report.problem.line == 6 and "signature" in report.problem.reason


def test_truncation_is_detected_by_the_signed_head(tmp_path, keypair):
    key, pub = keypair
    write_log(tmp_path / "a.log", key)
    rewrite(tmp_path / "a.log", lines(tmp_path / "a.log")[:18])  # whole entries cut off the end
    report = verify(tmp_path / "a.log", pub)
    assert not report.ok and "truncated" in report.problem.reason


def test_torn_tail_is_reported_and_repair_keeps_it(tmp_path, keypair):
    key, pub = keypair
    path = tmp_path / "a.log"
    write_log(path, key)
    data = path.read_bytes()
    path.write_bytes(data + b'{"seq":30,"kind":"deci')  # a write cut off mid-entry
    report = verify(path, pub)
    assert not report.ok and "torn tail" in report.problem.reason and report.good_entries == 30
    with pytest.raises(TornTailError, match="partial entry"):
        AuditLog(path, key)
    with AuditLog(path, key, repair=True) as log:
        log.append("decision", {"after": "repair"})
    assert verify(path, pub).ok
    quarantined = list(tmp_path.glob("a.log.torn-*"))
    assert quarantined and quarantined[0].read_bytes() == b'{"seq":30,"kind":"deci'
    repair = [json.loads(l) for l in lines(path) if b'"repair"' in l]
    assert repair and repair[0]["body"]["torn_bytes"] == 22


def test_appending_to_a_damaged_log_is_refused(tmp_path, keypair):
    key, _ = keypair
    path = tmp_path / "a.log"
    write_log(path, key)
    ls = lines(path)
    ls[4] = b"garbage"
    rewrite(path, ls)
    with pytest.raises(AuditError, match="line 5"):
        AuditLog(path, key)


def test_reopening_continues_the_chain(tmp_path, keypair):
    key, pub = keypair
    path = tmp_path / "a.log"
    write_log(path, key, n=7)
    write_log(path, key, n=4)
    assert verify(path, pub).ok


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from safety.audit.keys import load_private
    from safety.audit.log import AuditLog, AuditConfig
    log = AuditLog(Path(sys.argv[1]), load_private(Path(sys.argv[2])), AuditConfig(checkpoint_every=50))
    i = 0
    while True:
        entry = log.append("decision", {"i": i, "pad": "x" * 2000})
        print(entry["seq"], flush=True)  # acknowledged only after the write returned
        i += 1
""")


def test_kill_9_during_appends_loses_at_most_the_entry_in_flight(tmp_path, keypair):
    key, pub = keypair
    path = tmp_path / "a.log"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(tmp_path / "k.pem")],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    acked = -1
    deadline = time.time() + 60
    while acked < 300 and time.time() < deadline:
        acked = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert acked >= 300
    report = verify(path, pub, allow_unsigned_tail=True)  # it was killed while writing
    # Every acknowledged entry is there and intact; at most a torn tail beyond it.
    assert report.good_entries >= acked + 1
    assert report.ok or "torn tail" in report.problem.reason
    with AuditLog(path, key, repair=True):
        pass
    assert verify(path, pub).ok


bodies = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
              st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(st.tuples(st.just("append"), bodies), st.tuples(st.just("checkpoint"), st.none()),
                              st.tuples(st.just("reopen"), st.none())), min_size=1, max_size=30),
       every=st.integers(1, 7), flip=st.integers(0, 10**9))
def test_any_sequence_of_appends_verifies_and_any_byte_flip_is_caught(tmp_path_factory, ops, every, flip):
    d = tmp_path_factory.mktemp("log")
    key = generate(d / "k.pem", d / "k.pub")
    pub = load_public(d / "k.pub")
    path = d / "a.log"
    log = AuditLog(path, key, AuditConfig(checkpoint_every=every))
    log.append("decision", {"first": True})
    for op, body in ops:
        if op == "append":
            log.append("decision", {"value": body})
        elif op == "checkpoint":
            log.checkpoint()
        else:
            log.close()
            log = AuditLog(path, key, AuditConfig(checkpoint_every=every))
        assert verify(path, pub, allow_unsigned_tail=True).ok  # still being written
    log.close()
    assert verify(path, pub).ok
    data = bytearray(path.read_bytes())
    pos = flip % len(data)
    data[pos] ^= 0x01 if data[pos] != 0x0B else 0x02  # never turn a byte into a newline
    path.write_bytes(bytes(data))
    assert not verify(path, pub).ok


def test_search_finds_by_thought_cost_and_policy(tmp_path, keypair):
    key, _ = keypair
    path = tmp_path / "a.log"
    with AuditLog(path, key) as log:
        log.append("decision", {"policy_id": "vlm-a", "thought": "I will slow down", "costs": {"c": 0}})
        log.append("decision", {"policy_id": "vlm-b", "thought": "Speed up now", "costs": {"c": 2},
                                "shield": {"interventions": 3}})
    assert [e["body"]["policy_id"] for e in search(path, Query(thought="SLOW"))] == ["vlm-a"]
    assert [e["body"]["policy_id"] for e in search(path, Query(min_cost=1))] == ["vlm-b"]
    assert [e["body"]["policy_id"] for e in search(path, Query(interventions=True))] == ["vlm-b"]
    assert [e["body"]["policy_id"] for e in search(path, Query(policy="vlm-"))] == ["vlm-a", "vlm-b"]
    assert len(list(search(path, Query(kind="checkpoint")))) == 1
