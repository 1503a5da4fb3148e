"""Verification of an audit log, inclusion proofs of single entries.

`verify` walks the log once: JSON and field types, sequence numbers, hash chain, entry
hashes, and at each checkpoint the Merkle root, chain head and Ed25519 signature under the
trusted key. It stops at the first bad entry and names its line and field; the entries
before it stay readable and trusted. Strict by default: a torn last line, entries cut off
below the signed head (`<log>.head.json`), a head older than the last checkpoint, a missing
head and entries after the last checkpoint (not signed: anyone could have appended them)
all fail; with a witness store it also fails when the log is shorter than, or
inconsistent with, a head a witness co-signed (rollback, forks). Malformed input is a
clear problem, never a traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from safety.audit.keys import key_id
from safety.audit.log import GENESIS, canonical, entry_hash, head_payload, line_fields, read_lines
from safety.audit.merkle import MerkleFrontier, inclusion_path, leaf_hash, verify_inclusion

TAMPERING, INPUT = "tampering", "input"
"""Kinds of problem: the log's history does not hold (exit 1), or there is nothing valid to check (exit 2)."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """The first thing found wrong."""

    line: int
    """1-based line number in the log file (0: not tied to a line)."""
    reason: str
    kind: str = TAMPERING
    """'tampering' (history does not hold) or 'input' (no log, an empty one, or a bad option)."""


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
    witnessed: int = 0
    """Witnessed heads the log was checked against (each: not shorter, and consistent)."""

    @property
    def exit_code(self) -> int:
        """0 ok, 1 tampering, 2 usage or input (documented in `shakedown audit verify --help`)."""
        return 0 if self.ok else (2 if self.problem is not None and self.problem.kind == INPUT else 1)

    def summary(self) -> str:
        if self.ok:
            unsigned = self.entries - self.signed_entries
            tail = f"; {unsigned} entries after the last checkpoint are chained but not yet signed" if unsigned else ""
            witnessed = f"; consistent with {self.witnessed} witnessed heads" if self.witnessed else ""
            return (f"OK: {self.entries} entries, hash chain intact, {self.checkpoints} checkpoints verified "
                    f"with key {self.key_id}{tail}{witnessed}")
        if self.problem.kind == INPUT:
            return f"CANNOT VERIFY: {self.problem.reason}"
        where = f"at line {self.problem.line}" if self.problem.line else "beside the log"
        return (f"FAILED {where}: {self.problem.reason}. The first {self.good_entries} "
                f"entries are intact ({self.checkpoints} checkpoints verified up to entry {self.signed_entries}).")


HEAD_FIELDS = {"tree_size": int, "root": str, "chain_head": str, "key_id": str, "signed_at": (int, float),
               "signature": str}
"""The fields of a checkpoint body and of the signed head, with their JSON types."""


def malformed_head(body: Any) -> str | None:
    """What is wrong with a checkpoint body or head of the wrong shape, or None."""
    if not isinstance(body, dict):
        return f"is a JSON {type(body).__name__}, not an object"
    for name, kind in HEAD_FIELDS.items():
        value = body.get(name)
        if value is None:
            return f"has no field {name!r}"
        if isinstance(value, bool) or not isinstance(value, kind):
            return f"field {name!r} is {type(value).__name__}, not {getattr(kind, '__name__', 'a number')}"
    if len(body["root"]) != 64 or len(body["signature"]) != 128:
        return "field 'root' or 'signature' has the wrong length for SHA-256 / Ed25519"
    return None


def _check_signature(body: dict[str, Any], public: Ed25519PublicKey, kid: str) -> str | None:
    if body.get("key_id") != kid:
        return f"checkpoint signed by key {body.get('key_id')!r}, not the trusted key {kid}"
    try:
        public.verify(bytes.fromhex(body["signature"]), head_payload(body))
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return "checkpoint signature does not verify (forged or altered checkpoint)"
    return None


ENTRY_FIELDS = {"seq": int, "kind": str, "time": (int, float), "body": dict, "prev": str, "hash": str}


def _parse_entry(line: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        entry = json.loads(line)
    except ValueError:
        return None, "not valid JSON"
    if not isinstance(entry, dict):
        return None, f"a JSON {type(entry).__name__}, not an entry object"
    for name, kind in ENTRY_FIELDS.items():
        if name not in entry:
            return None, f"no field {name!r}"
        if isinstance(entry[name], bool) or not isinstance(entry[name], kind):
            return None, f"field {name!r} has the wrong type ({type(entry[name]).__name__})"
    return entry, ""


def verify(path: Path | str, public: Ed25519PublicKey, allow_unsigned_tail: bool = False,
           allow_missing_head: bool = False, witness: Path | str | None = None) -> VerifyReport:
    """Check a log. Strict by default: entries after the last checkpoint (not yet signed), a
    missing signed head, a missing or empty log all fail; `witness` (a witness store) adds
    the check that the log is neither shorter than nor inconsistent with any head it saw."""
    path = Path(path)
    kid = key_id(public)
    if not path.exists():
        return VerifyReport(False, 0, 0, 0, 0, Problem(0, f"{path} does not exist", INPUT), kid)
    contents = read_lines(path)
    if not contents.lines and contents.torn_tail is None:
        return VerifyReport(False, 0, 0, 0, 0, Problem(0, f"{path} is empty: there is nothing to verify", INPUT), kid)
    witnessed = _witnessed_heads(witness, kid) if witness is not None else []
    if isinstance(witnessed, str):
        return VerifyReport(False, 0, 0, 0, 0, Problem(0, witnessed, INPUT), kid)
    want_roots = {h["tree_size"] for h in witnessed}
    frontier = MerkleFrontier()
    prev = GENESIS
    checkpoints = signed = 0
    roots: dict[int, str] = {}
    prefix_roots: dict[int, str] = {0: frontier.root().hex()} if 0 in want_roots else {}

    def fail(i: int, reason: str, line: int | None = None) -> VerifyReport:
        return VerifyReport(False, len(contents.lines), i, checkpoints, signed,
                            Problem(i + 1 if line is None else line, reason), kid, len(witnessed))

    for i, line in enumerate(contents.lines):
        fast = line_fields(line)
        body = None
        if fast is not None and fast[1] == "checkpoint":
            try:
                body = json.loads(fast[5])
            except ValueError:
                fast = None  # the full parse below names what is wrong
        if fast is not None:  # the common case: no JSON parse of the body, one hash of the line's bytes
            seq, kind, entry_prev, h, hashed, _ = fast
            if seq != i:
                return fail(i, f"sequence number {seq} where {i} was expected (an entry was deleted, inserted or moved)")
            if entry_prev != prev:
                return fail(i, "hash chain broken: 'prev' does not match the previous entry (deleted or reordered)")
            if hashlib.sha256(hashed).hexdigest() != h:
                return fail(i, "entry hash does not match its content (the entry was modified)")
        else:  # anything unusual gets the full, typed parse and names what is wrong
            entry, why = _parse_entry(line)
            if entry is None:
                return fail(i, f"not a valid entry: {why}")
            seq, kind, body, entry_prev, h = entry["seq"], entry["kind"], entry["body"], entry["prev"], entry["hash"]
            if seq != i:
                return fail(i, f"sequence number {seq} where {i} was expected (an entry was deleted, inserted or moved)")
            if entry_prev != prev:
                return fail(i, "hash chain broken: 'prev' does not match the previous entry (deleted or reordered)")
            if entry_hash(entry) != h:
                return fail(i, "entry hash does not match its content (the entry was modified)")
            if canonical(entry) != line:
                return fail(i, "entry is not in canonical form (its bytes were edited)")
        if kind == "checkpoint":
            bad_shape = malformed_head(body)
            if bad_shape:
                return fail(i, f"checkpoint body {bad_shape}")
            if body["tree_size"] != i or body["root"] != frontier.root().hex() or body["chain_head"] != prev:
                return fail(i, "checkpoint does not match the entries before it (root, size or chain head)")
            bad = _check_signature(body, public, kid)
            if bad:
                return fail(i, bad)
            checkpoints += 1
            signed = i + 1  # the entries before it and the signed checkpoint itself
            roots[i] = body["root"]
        frontier.add(leaf_hash(line))
        prev = h
        if frontier.size in want_roots:
            prefix_roots[frontier.size] = frontier.root().hex()

    n = len(contents.lines)
    if contents.torn_tail is not None:
        offset, torn = contents.torn_tail
        return fail(n, f"torn tail: {len(torn)} bytes of a partial entry at byte {offset} (a write was cut off); "
                       "`shakedown audit repair` quarantines it if it lies beyond the signed head", line=n + 1)
    for head in witnessed:  # rollback and forks: a witness remembers what it saw
        size = head["tree_size"]
        if size > n:
            return fail(n, f"the log has {n} entries but a witness co-signed a head of {size} at "
                           f"{head['witnessed_at']:.0f}: entries were cut off (rollback)", line=0)
        if prefix_roots.get(size) != head["root"]:
            return fail(n, f"the first {size} entries do not hash to the root a witness co-signed: history "
                           "was rewritten (fork)", line=0)
    head_path = path.with_name(path.name + ".head.json")
    if not head_path.exists():
        if not allow_missing_head and not (allow_unsigned_tail and not checkpoints):  # nothing signed yet
            return fail(n, f"{head_path.name} (the signed head) is missing: a truncation could not be told "
                           "from a clean log; pass --allow-missing-head only if you know why", line=0)
    else:
        try:
            head = json.loads(head_path.read_text())
        except ValueError:
            return fail(n, f"{head_path.name} is not valid JSON", line=0)
        bad_shape = malformed_head(head)
        if bad_shape:
            return fail(n, f"{head_path.name} {bad_shape}", line=0)
        bad = _check_signature(head, public, kid)
        if bad:
            return fail(n, f"{head_path.name}: {bad}", line=0)
        size = head["tree_size"]
        if size > n:
            return fail(n, f"truncated: the signed head covers {size} entries, the log has {n}", line=n)
        if roots.get(size) != head["root"]:
            return fail(n, f"the signed head (size {size}) matches no checkpoint in the log", line=0)
        if roots and size < max(roots):
            return fail(n, f"the signed head (size {size}) is older than the last checkpoint (size {max(roots)}): "
                           "an old head was put back", line=0)
    if signed < n and not allow_unsigned_tail:
        return fail(signed, f"{n - signed} entries after the last checkpoint are not signed: they could have been "
                            "appended by anyone; pass --allow-unsigned-tail for a log still being written",
                    line=signed + 1)
    return VerifyReport(True, n, n, checkpoints, signed, None, kid, len(witnessed))


def _witnessed_heads(store: Path | str, log_key_id: str) -> list[dict[str, Any]] | str:
    from safety.audit.witness import WitnessError, witnessed_heads

    try:
        return witnessed_heads(Path(store), log_key_id)
    except WitnessError as exc:
        return str(exc)


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
    cp = proof.get("checkpoint") if isinstance(proof, dict) else None
    if malformed_head(cp) is not None or not isinstance(proof.get("seq"), int) or not isinstance(proof.get("entry"), str):
        return False
    if _check_signature(cp, public, key_id(public)) is not None or cp["tree_size"] != proof.get("tree_size"):
        return False
    try:
        path = [bytes.fromhex(p) for p in proof["path"]]
        root = bytes.fromhex(cp["root"])
    except (ValueError, TypeError):
        return False
    return verify_inclusion(proof["seq"], proof["tree_size"], leaf_hash(proof["entry"].encode()), path, root)
