"""Every way of rewriting history found by trying as an attacker would: each was accepted by
the old verify and is caught now (rollback three ways, a forged unsigned tail, a deleted
head, truncation laundered by repair, missing and empty logs, malformed checkpoints and
heads, short hashes in proofs, NaN and lone surrogates), plus consistency proofs against the
published Certificate Transparency probes and a witness that remembers heads."""

import base64
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safety.audit.keys import generate, load_public
from safety.audit.log import AuditConfig, AuditError, AuditLog, canonical, entry_hash
from safety.audit.merkle import (
    consistency_proof,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from safety.audit.verify import prove, verify, verify_proof
from safety.audit.witness import Witness, WitnessError
from shakedown.cli import main

PROBES = json.loads((Path(__file__).parent / "data" / "ct_probes.json").read_text())


@pytest.fixture
def keypair(tmp_path):
    key = generate(tmp_path / "k.pem", tmp_path / "k.pub")
    return key, load_public(tmp_path / "k.pub")


def write(path: Path, key, n: int, every: int = 5) -> None:
    with AuditLog(path, key, AuditConfig(checkpoint_every=every)) as log:
        for i in range(n):
            log.append("decision", {"i": i, "thought": f"step {i}"})


def head(path: Path) -> Path:
    return path.with_name(path.name + ".head.json")


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def forged_entry(prev_line: bytes, kind: str, body) -> bytes:
    """What an attacker without the key can still write: a correctly chained entry."""
    prev = json.loads(prev_line)
    entry = {"seq": prev["seq"] + 1, "kind": kind, "time": prev["time"] + 1, "body": body, "prev": prev["hash"]}
    entry["hash"] = entry_hash(entry)
    return canonical(entry)


# -- rollback ----------------------------------------------------------------------------------
def test_rollback_to_an_older_checkpoint_is_caught_by_a_witness(tmp_path, keypair):
    key, pub = keypair
    log, store = tmp_path / "a.log", tmp_path / "witness"
    write(log, key, 12)
    old_log, old_head = log.read_bytes(), head(log).read_bytes()
    with AuditLog(log, key, AuditConfig(checkpoint_every=5)) as w:
        for i in range(10):
            w.append("decision", {"i": 100 + i})
    assert Witness(store).cosign(log, pub)["tree_size"] > 13
    # Way 1: put the older log and its older (validly signed) head back.
    log.write_bytes(old_log)
    head(log).write_bytes(old_head)
    assert verify(log, pub).ok  # without a witness this cannot be told from a shorter honest log
    report = verify(log, pub, witness=store)
    assert not report.ok and "rollback" in report.problem.reason and report.exit_code == 1
    # And the witness refuses to co-sign the shorter history.
    with pytest.raises(WitnessError, match="not consistent"):
        Witness(store).cosign(log, pub)


def test_rollback_of_the_head_alone_and_truncation_below_the_head_are_caught(tmp_path, keypair):
    key, pub = keypair
    log = tmp_path / "a.log"
    write(log, key, 7, every=5)
    old_head = head(log).read_bytes()
    with AuditLog(log, key, AuditConfig(checkpoint_every=5)) as w:
        w.append("decision", {"more": 1})
    full = log.read_bytes()
    head(log).write_bytes(old_head)  # way 2: an older head beside the newer log
    report = verify(log, pub)
    assert not report.ok and "older than the last checkpoint" in report.problem.reason
    # A writer killed between the checkpoint's line and the head file leaves this same state (the head one
    # checkpoint behind); the next open moves the head up, on the record, only if the opener's key signed it.
    with AuditLog(log, generate(tmp_path / "other.pem", tmp_path / "other.pub"), AuditConfig(checkpoint_every=5)):
        pass
    assert head(log).read_bytes() == old_head
    with AuditLog(log, key, AuditConfig(checkpoint_every=5)):
        pass
    assert verify(log, pub).ok and head(log).read_bytes() != old_head
    assert b'"kind":"head_caught_up"' in log.read_bytes()
    log.write_bytes(full[: full.rfind(b"\n", 0, len(full) - 1) + 1])  # way 3: cut entries below the head
    assert not verify(log, pub).ok


def test_a_head_more_than_one_checkpoint_behind_is_left_as_evidence(tmp_path, keypair):
    key, pub = keypair
    log = tmp_path / "a.log"
    write(log, key, 7, every=5)
    old_head = head(log).read_bytes()
    for more in range(2):  # two more checkpoints: no kill leaves the head this far behind
        with AuditLog(log, key, AuditConfig(checkpoint_every=5)) as w:
            w.append("decision", {"more": more})
    head(log).write_bytes(old_head)
    with AuditLog(log, key, AuditConfig(checkpoint_every=5)):
        pass
    report = verify(log, pub)
    assert not report.ok and "older than the last checkpoint" in report.problem.reason
    assert b'"kind":"head_caught_up"' not in log.read_bytes()


def test_a_forged_tail_after_the_last_checkpoint_fails_unless_allowed(tmp_path, keypair):
    key, pub = keypair
    log = tmp_path / "a.log"
    write(log, key, 6)
    last = lines(log)[-1]
    with open(log, "ab") as f:
        f.write(forged_entry(last, "decision", {"thought": "all fine, nothing to see"}) + b"\n")
    report = verify(log, pub)
    assert not report.ok and "not signed" in report.problem.reason and report.problem.line == len(lines(log))
    assert verify(log, pub, allow_unsigned_tail=True).ok


def test_a_deleted_head_fails_strict_verify(tmp_path, keypair, capsys):
    key, pub = keypair
    log = tmp_path / "a.log"
    write(log, key, 6)
    head(log).unlink()
    report = verify(log, pub)
    assert not report.ok and "signed head) is missing" in report.problem.reason
    assert verify(log, pub, allow_missing_head=True).ok
    assert main(["audit", "verify", str(log), "--key", str(tmp_path / "k.pub")]) == 1
    assert main(["audit", "verify", str(log), "--key", str(tmp_path / "k.pub"), "--allow-missing-head"]) == 0


def test_truncating_mid_record_cannot_be_laundered_by_repair(tmp_path, keypair):
    key, pub = keypair
    log = tmp_path / "a.log"
    write(log, key, 12)
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 200])  # cut into the signed part, leaving a torn line
    before = log.read_bytes()
    with pytest.raises(AuditError, match="history is never moved backward"):
        AuditLog(log, key, repair=True)
    assert log.read_bytes() == before  # nothing was quarantined, truncated or re-signed
    assert not verify(log, pub).ok


def test_a_torn_write_beyond_the_head_is_still_repairable(tmp_path, keypair):
    key, pub = keypair
    log = tmp_path / "a.log"
    write(log, key, 6)
    with open(log, "ab") as f:
        f.write(b'{"seq": 99, "kind": "decis')  # a crash mid-append after the signed head
    with AuditLog(log, key, repair=True):
        pass
    assert verify(log, pub).ok


# -- input that is not a log ---------------------------------------------------------------------
def test_missing_and_empty_logs_are_input_errors(tmp_path, keypair, capsys):
    _, pub = keypair
    for path, said in ((tmp_path / "nope.log", "does not exist"), (tmp_path / "empty.log", "is empty")):
        if "empty" in path.name:
            path.write_bytes(b"")
        report = verify(path, pub)
        assert not report.ok and said in report.problem.reason and report.exit_code == 2
        assert main(["audit", "verify", str(path), "--key", str(tmp_path / "k.pub")]) == 2
        assert "CANNOT VERIFY" in capsys.readouterr().out


@pytest.mark.parametrize("mangle, said", [
    (lambda b: [b], "has the wrong type (list)"),
    (lambda b: {**b, "signature": 12345}, "field 'signature' is int"),
    (lambda b: {**b, "tree_size": "5"}, "field 'tree_size' is str"),
    (lambda b: {k: v for k, v in b.items() if k != "root"}, "has no field 'root'"),
    (lambda b: {**b, "root": b["root"][:10]}, "wrong length"),
])
def test_malformed_checkpoints_are_named_not_a_traceback(tmp_path, keypair, mangle, said):
    """Even a correctly chained checkpoint of the wrong shape (which only needs no key to write)."""
    key, pub = keypair
    log = tmp_path / "a.log"
    write(log, key, 4, every=100)  # one checkpoint at the end, written on close
    rows = lines(log)
    cp = json.loads(rows[-1])
    rows[-1] = forged_entry(rows[-2], "checkpoint", mangle(cp["body"]))
    log.write_bytes(b"".join(r + b"\n" for r in rows))
    report = verify(log, pub)
    assert not report.ok and said in report.problem.reason and report.problem.line == len(rows)


@pytest.mark.parametrize("content, said", [
    ("[]", "is a JSON list"), ('{"tree_size": 4}', "has no field"), ("not json", "not valid JSON"),
    ('{"tree_size": true, "root": "", "chain_head": "", "key_id": "", "signed_at": 1, "signature": ""}', "is bool"),
])
def test_malformed_heads_are_named_not_a_traceback(tmp_path, keypair, content, said):
    key, pub = keypair
    log = tmp_path / "a.log"
    write(log, key, 4)
    head(log).write_text(content)
    report = verify(log, pub)
    assert not report.ok and said in report.problem.reason


def test_nan_and_lone_surrogates_are_kept_as_evidence_not_crashes(tmp_path, keypair):
    key, pub = keypair
    log = tmp_path / "a.log"
    with AuditLog(log, key) as w:
        entry = w.append("decision", {"thought": "ok \ud800 end", "cost": float("nan"), "v": float("inf")})
    assert entry["body"] == {"thought": "ok \\ud800 end", "cost": "nan", "v": "inf"}
    assert verify(log, pub).ok


# -- proofs --------------------------------------------------------------------------------------
def _b64(x):
    return base64.b64decode(x) if x is not None else b""


def test_published_ct_probes():
    """transparency-dev/merkle's 98 inclusion and 98 consistency probes, valid and invalid. One
    differs on purpose: a probe with 14-byte placeholder roots that it accepts; we refuse any
    hash that is not 32 bytes."""
    disagree = []
    for p in PROBES["inclusion"]:
        ok = verify_inclusion(p["leafIdx"], p["treeSize"], _b64(p["leafHash"]), [_b64(x) for x in p["proof"] or []],
                              _b64(p["root"]))
        if ok == p["wantErr"]:
            disagree.append(p["file"])
    for p in PROBES["consistency"]:
        ok = verify_consistency(p["size1"], p["size2"], _b64(p["root1"]), _b64(p["root2"]),
                                [_b64(x) for x in p["proof"] or []])
        if ok == p["wantErr"]:
            disagree.append(p["file"])
    assert len(PROBES["inclusion"]) == 98 and len(PROBES["consistency"]) == 98
    assert disagree == ["consistency/additional/sizes-are-equal-one-and-proof-is-empty.json"]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), data=st.data())
def test_consistency_proofs_between_any_two_sizes(n, data):
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    m = data.draw(st.integers(0, n))
    proof = consistency_proof(m, leaves)
    r1, r2 = root_from_leaf_hashes(leaves[:m]), root_from_leaf_hashes(leaves)
    assert verify_consistency(m, n, r1, r2, proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        flipped = [p if j != i else bytes([p[0] ^ 1]) + p[1:] for j, p in enumerate(proof)]
        assert not verify_consistency(m, n, r1, r2, flipped)
        assert not verify_consistency(m, n, r1, r2, [p[:31] for p in proof])  # short hashes prove nothing
    if m < n:
        other = [leaf_hash(b"x")] + leaves[1:]  # a forked history
        assert not verify_consistency(m, n, root_from_leaf_hashes(other[:m]), r2, proof) or m == 0


def test_inclusion_proofs_with_short_hashes_are_refused(tmp_path, keypair):
    key, pub = keypair
    log = tmp_path / "a.log"
    write(log, key, 9)
    proof = prove(log, 3)
    assert verify_proof(proof, pub)
    short = {**proof, "path": [p[:62] for p in proof["path"]]}
    assert not verify_proof(short, pub)
    assert not verify_proof({**proof, "checkpoint": ["not", "a", "checkpoint"]}, pub)


# -- witnesses -----------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.integers(1, 15), more=st.integers(1, 15), cut=st.integers(0, 10**6), every=st.integers(1, 6))
def test_every_rollback_or_rewrite_of_a_witnessed_log_is_detected(tmp_path_factory, first, more, cut, every):
    d = tmp_path_factory.mktemp("w")
    key = generate(d / "k.pem", d / "k.pub")
    pub = load_public(d / "k.pub")
    log = d / "a.log"
    write(log, key, first, every)
    witness = Witness(d / "store")
    witness.cosign(log, pub)
    with AuditLog(log, key, AuditConfig(checkpoint_every=every)) as w:
        for i in range(more):
            w.append("decision", {"i": 1000 + i})
    witness.cosign(log, pub)  # consistent growth is co-signed
    witnessed = witness.cosign(log, pub)["tree_size"]
    rows = lines(log)
    keep = cut % witnessed  # cut back below what the witness saw (the attacker has no key to sign anew)
    rebuilt = d / "rebuilt.log"
    rebuilt.write_bytes(b"".join(r + b"\n" for r in rows[:keep]))
    shutil.copy(rebuilt, log)
    head(log).unlink(missing_ok=True)
    report = verify(log, pub, allow_missing_head=True, allow_unsigned_tail=True, witness=d / "store")
    assert not report.ok


def test_a_witness_store_survives_a_torn_line_and_detects_a_foreign_one(tmp_path, keypair):
    key, pub = keypair
    log = tmp_path / "a.log"
    write(log, key, 6)
    witness = Witness(tmp_path / "store")
    witness.cosign(log, pub)
    with open(tmp_path / "store" / "heads.jsonl", "ab") as f:
        f.write(b'{"log_key_id": "x", "tree')  # a witness killed mid-write
    assert verify(log, pub, witness=tmp_path / "store").witnessed == 1
    with open(tmp_path / "store" / "heads.jsonl", "ab") as f:
        f.write(b'\n{"log_key_id": "forged"}\n')
    report = verify(log, pub, witness=tmp_path / "store")
    assert not report.ok and report.exit_code == 2 and "not a valid co-signed head" in report.problem.reason


def test_witness_command(tmp_path, keypair, capsys):
    key, pub = keypair
    log = tmp_path / "a.log"
    write(log, key, 6)
    shutil.copy(tmp_path / "k.pub", tmp_path / "a.pub")
    assert main(["audit", "witness", str(log), "--store", str(tmp_path / "s"), "--key", str(tmp_path / "a.pub")]) == 0
    assert "co-signed the head" in capsys.readouterr().out
    assert main(["audit", "verify", str(log), "--key", str(tmp_path / "a.pub"), "--witness", str(tmp_path / "s")]) == 0
    assert "consistent with 1 witnessed heads" in capsys.readouterr().out


def test_bodies_that_look_like_the_entry_tail_neither_confuse_nor_weaken_verify(tmp_path, keypair):
    """verify reads the tail after the body without parsing the body (fast); bodies holding their own
    "hash", "kind" or "seq" keys, or the tail's text inside a string, are still read right."""
    key, pub = keypair
    log = tmp_path / "a.log"
    tricky = [{"hash": "0" * 64, "kind": "checkpoint", "seq": 0},
              {"text": ',"hash":"' + "a" * 64 + '","kind":"x","prev":"' + "b" * 64 + '","seq":1,"time":1}'},
              {"nested": {"body": {"hash": "c" * 64}}, "list": [{"kind": "decision"}]}]
    with AuditLog(log, key) as w:
        for body in tricky:
            w.append("decision", body)
    assert verify(log, pub).ok
    rows = lines(log)
    for i in range(len(tricky)):  # change one character inside each tricky body: caught every time
        edited = list(rows)
        row = edited[i]
        edited[i] = row[:20] + bytes([row[20] ^ 0x01]) + row[21:]  # inside the body
        log.write_bytes(b"".join(r + b"\n" for r in edited))
        assert not verify(log, pub).ok
