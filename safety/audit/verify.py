"""Verification of an audit log and inclusion proofs of single entries.

`verify` walks the log once: JSON, sequence numbers, hash chain, entry hashes, and at each
checkpoint the Merkle root, chain head and Ed25519 signature under the trusted key. It
stops at the first bad entry and reports it; the entries before it stay readable and
trusted. A torn last line, entries cut off below the signed head (`<log>.head.json`), and
entries after the last checkpoint (chained but not yet signed) are reported as such.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from safety.audit.keys import key_id
from safety.audit.log import GENESIS, canonical, entry_hash, head_payload, read_lines
from safety.audit.merkle import MerkleFrontier, inclusion_path, leaf_hash, verify_inclusion


@dataclasses.dataclass(frozen=True)
class Problem:
    """The first thing found wrong."""

    line: int
    """1-based line number in the log file (0: not tied to a line)."""
    reason: str


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    """Complete lines in the file."""
    good_entries: int
    """Entries before the first problem: these are intact."""
    checkpoints: int
    """Checkpoints whose root and signature verified."""
    signed_entries: int
    """Entries covered by the last verified checkpoint."""
    problem: Problem | None
    key_id: str

    def summary(self) -> str:
        if self.ok:
            unsigned = self.entries - self.signed_entries
            tail = f"; {unsigned} entries after the last checkpoint are chained but not yet signed" if unsigned else ""
            return (f"OK: {self.entries} entries, hash chain intact, {self.checkpoints} checkpoints verified "
                    f"with key {self.key_id}{tail}")
        return (f"FAILED at line {self.problem.line}: {self.problem.reason}. The first {self.good_entries} "
                f"entries are intact ({self.checkpoints} checkpoints verified up to entry {self.signed_entries}).")


def _check_signature(body: dict[str, Any], public: Ed25519PublicKey, kid: str) -> str | None:
    if body.get("key_id") != kid:
        return f"checkpoint signed by key {body.get('key_id')!r}, not the trusted key {kid}"
    try:
        public.verify(bytes.fromhex(body["signature"]), head_payload(body))
    except (InvalidSignature, ValueError, KeyError):
        return "checkpoint signature does not verify (forged or altered checkpoint)"
    return None


def verify(path: Path | str, public: Ed25519PublicKey) -> VerifyReport:
    path = Path(path)
    kid = key_id(public)
    contents = read_lines(path)
    frontier = MerkleFrontier()
    prev = GENESIS
    checkpoints = signed = 0
    roots: dict[int, str] = {}

    def fail(i: int, reason: str) -> VerifyReport:
        return VerifyReport(False, len(contents.lines), i, checkpoints, signed, Problem(i + 1, reason), kid)

    for i, line in enumerate(contents.lines):
        try:
            entry = json.loads(line)
            seq, kind, body, entry_prev, h = entry["seq"], entry["kind"], entry["body"], entry["prev"], entry["hash"]
        except (ValueError, KeyError, TypeError):
            return fail(i, "not a valid entry (unparsable JSON or missing fields)")
        if seq != i:
            return fail(i, f"sequence number {seq} where {i} was expected (an entry was deleted, inserted or moved)")
        if entry_prev != prev:
            return fail(i, "hash chain broken: 'prev' does not match the previous entry (deleted or reordered)")
        if entry_hash(entry) != h:
            return fail(i, "entry hash does not match its content (the entry was modified)")
        if canonical(entry) != line:
            return fail(i, "entry is not in canonical form (its bytes were edited)")
        if kind == "checkpoint":
            if body.get("tree_size") != i or body.get("root") != frontier.root().hex() or body.get("chain_head") != prev:
                return fail(i, "checkpoint does not match the entries before it (root, size or chain head)")
            bad = _check_signature(body, public, kid)
            if bad:
                return fail(i, bad)
            checkpoints += 1
            signed = i + 1  # the entries before it and the signed checkpoint itself
            roots[i] = body["root"]
        frontier.add(leaf_hash(line))
        prev = h

    n = len(contents.lines)
    if contents.torn_tail is not None:
        offset, torn = contents.torn_tail
        return VerifyReport(False, n, n, checkpoints, signed,
                            Problem(n + 1, f"torn tail: {len(torn)} bytes of a partial entry at byte {offset} "
                                    "(a write was cut off); `shakedown audit repair` quarantines it"), kid)
    head_path = path.with_name(path.name + ".head.json")
    if head_path.exists():
        try:
            head = json.loads(head_path.read_text())
        except ValueError:
            return VerifyReport(False, n, n, checkpoints, signed, Problem(0, f"{head_path.name} is not valid JSON"), kid)
        bad = _check_signature(head, public, kid)
        if bad:
            return VerifyReport(False, n, n, checkpoints, signed, Problem(0, f"{head_path.name}: {bad}"), kid)
        size = head.get("tree_size", -1)
        if size > n:
            return VerifyReport(False, n, n, checkpoints, signed,
                                Problem(n, f"truncated: the signed head covers {size} entries, the log has {n}"), kid)
        if roots.get(size) != head.get("root"):
            return VerifyReport(False, n, n, checkpoints, signed,
                                Problem(0, f"the signed head (size {size}) matches no checkpoint in the log"), kid)
    return VerifyReport(True, n, n, checkpoints, signed, None, kid)


def prove(path: Path | str, seq: int) -> dict[str, Any]:
    """An inclusion proof of entry `seq` against the first checkpoint that covers it."""
    lines = read_lines(Path(path)).lines
    if not 0 <= seq < len(lines):
        raise ValueError(f"entry {seq} is not in the log ({len(lines)} entries)")
    for i in range(seq + 1, len(lines)):
        entry = json.loads(lines[i])
        if entry["kind"] == "checkpoint":
            hashes = [leaf_hash(line) for line in lines[:i]]
            return {"seq": seq, "entry": lines[seq].decode(), "tree_size": i,
                    "path": [p.hex() for p in inclusion_path(seq, hashes)], "checkpoint": entry["body"]}
    raise ValueError(f"no checkpoint covers entry {seq} yet; close the log (or checkpoint it) first")


def verify_proof(proof: dict[str, Any], public: Ed25519PublicKey) -> bool:
    """True when the entry is in the tree whose root the trusted key signed."""
    cp = proof["checkpoint"]
    if _check_signature(cp, public, key_id(public)) is not None or cp["tree_size"] != proof["tree_size"]:
        return False
    try:
        path = [bytes.fromhex(p) for p in proof["path"]]
        root = bytes.fromhex(cp["root"])
    except (ValueError, TypeError):
        return False
    return verify_inclusion(proof["seq"], proof["tree_size"], leaf_hash(proof["entry"].encode()), path, root)
