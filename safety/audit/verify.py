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

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from safety.audit.keys import key_id
from safety.audit.log import (
    GENESIS,
    TAIL_PATTERN,
    canonical,
    entry_hash,
    read_lines,
    signature_problem,
    tail_match,
)
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


CHUNK_BYTES = 1 << 20
"""About how much of the log is checked as one unit (whole lines). Chunks are hashed apart, in
parallel, each into the aligned perfect Merkle subtrees its lines cover, put together in order."""
PARALLEL_BYTES = 8 << 20
"""Logs at least this large are checked on all cores (when `verify` is left to choose)."""


@dataclasses.dataclass
class ChunkScan:
    """What one chunk of consecutive entries says, checked on its own (see `scan_chunk`)."""

    start: int
    """Index of its first entry."""
    count: int
    """Entries in it."""
    first_prev: str | None
    """The first entry's 'prev' (None when that entry is unreadable): the previous chunk's last hash."""
    last_hash: str
    """The last good entry's hash."""
    subtrees: tuple[tuple[int, bytes], ...]
    """(size, root) of the perfect subtrees the good entries make up, each aligned in the whole log
    (at a multiple of its size), in order: `MerkleFrontier.add_subtree` takes them as they are."""
    checkpoints: list[tuple[int, dict[str, Any], tuple[tuple[int, bytes], ...]]]
    """(index, body, subtrees of this chunk's entries before it) of each checkpoint whose shape,
    size, chain head and signature hold; its root is checked against the whole log's frontier."""
    prefixes: dict[int, tuple[tuple[int, bytes], ...]]
    """Subtrees of this chunk's entries before each wanted prefix size inside it (witnessed heads)."""
    problem: tuple[int, str] | None
    """(index, reason) of the first entry found wrong here, if any."""
    torn_tail: tuple[int, bytes] | None = None
    """(byte offset, bytes) of a partial last line of the log, if it starts in this chunk."""


@functools.lru_cache(maxsize=4)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def scan_chunk(start: int, lines: Sequence[bytes], public_raw: bytes, want: frozenset[int] = frozenset()) -> ChunkScan:
    """Check entries `start`, `start + 1`, ... on their own: canonical shape, sequence numbers,
    the chain inside the chunk, each entry's hash, and each checkpoint's shape, size, chain head
    and signature; hash the leaves. What needs the entries before the chunk (its first 'prev',
    the checkpoints' Merkle roots) is left to the caller, who has them."""
    public = _public_key(public_raw)
    kid = key_id(public)
    sha256, fullmatch = hashlib.sha256, TAIL_PATTERN.fullmatch
    stack: list[tuple[int, bytes]] = []  # this chunk's aligned subtrees, kept inline: it is the hot loop
    first_prev: str | None = None
    prev = ""
    checkpoints: list[tuple[int, dict[str, Any], tuple[tuple[int, bytes], ...]]] = []
    prefixes: dict[int, tuple[tuple[int, bytes], ...]] = {}

    def result(problem: tuple[int, str] | None) -> ChunkScan:
        return ChunkScan(start, len(lines), first_prev, prev, tuple(stack), checkpoints, prefixes, problem)

    for j, line in enumerate(lines):
        i = start + j
        if want and i in want:
            prefixes[i] = tuple(stack)
        # The fast path reads a canonical line's fixed-shape tail (see `tail_match`) without
        # parsing its body and hashes its bytes as they are; anything else gets the full parse.
        at = line.rfind(b',"hash":"') if line.startswith(b'{"body":{') else -1
        m = fullmatch(line, at) if at > 0 else None
        body = None
        if m is not None:
            seq, kind, entry_prev, h = int(m.group(5)), m.group(3), m.group(4).decode(), m.group(1).decode()
            if kind == b"checkpoint":
                try:
                    body = json.loads(line[8:at])
                except ValueError:
                    m = None  # the full parse below names what is wrong
        if m is None:  # anything unusual gets the full, typed parse and names what is wrong
            entry, why = _parse_entry(line)
            if entry is None:
                return result((i, f"not a valid entry: {why}"))
            seq, kind, body, entry_prev, h = entry["seq"], entry["kind"], entry["body"], entry["prev"], entry["hash"]
            kind = kind.encode("utf-8", "backslashreplace")
        if seq != i:
            return result((i, f"sequence number {seq} where {i} was expected (an entry was deleted, inserted or moved)"))
        if j == 0:
            first_prev = prev = entry_prev
        if entry_prev != prev:
            return result((i, "hash chain broken: 'prev' does not match the previous entry (deleted or reordered)"))
        if m is not None:
            view = memoryview(line)  # the line without its hash field, hashed without copying it
            digest = sha256(view[:at])
            digest.update(view[m.start(2):])
            if digest.hexdigest() != h:
                return result((i, "entry hash does not match its content (the entry was modified)"))
        else:
            if entry_hash(entry) != h:
                return result((i, "entry hash does not match its content (the entry was modified)"))
            if canonical(entry) != line:
                return result((i, "entry is not in canonical form (its bytes were edited)"))
        if kind == b"checkpoint":
            bad_shape = malformed_head(body)
            if bad_shape:
                return result((i, f"checkpoint body {bad_shape}"))
            if body["tree_size"] != i or body["chain_head"] != entry_prev:
                return result((i, "checkpoint does not match the entries before it (root, size or chain head)"))
            bad = signature_problem(body, public, kid)
            if bad:
                return result((i, bad))
            checkpoints.append((i, body, tuple(stack)))
        leaf = sha256(b"\x00")
        leaf.update(line)
        node, size = leaf.digest(), 1
        # Merge equal neighbours only into subtrees aligned in the whole log (the chunk may start anywhere).
        while stack and stack[-1][0] == size and (i + 1) % (2 * size) == 0:
            node = sha256(b"\x01" + stack.pop()[1] + node).digest()
            size *= 2
        stack.append((size, node))
        prev = h
    if want and start + len(lines) in want:
        prefixes[start + len(lines)] = tuple(stack)
    return result(None)


def lines_starting_in(path: Path | str, offset: int, end: int) -> tuple[list[bytes], tuple[int, bytes] | None]:
    """The complete lines of a file that start in bytes [offset, end) (the last may run past `end`),
    and the (byte offset, bytes) of a partial last line of the file if it starts there. Cutting a
    file at any byte offsets and reading each piece this way gives every line exactly once, so
    a worker finds its own lines: nobody has to read the whole file first."""
    with open(path, "rb") as f:
        f.seek(max(offset - 1, 0))
        data = f.read(end - offset + (offset > 0))
        if offset > 0:  # data[0] is the byte before `offset`: skip the line that started before it
            first = data.find(b"\n") + 1
            if not 0 < first < len(data):
                return [], None  # no line starts in [offset, end)
            data, offset = data[first:], offset - 1 + first
        if not data.endswith(b"\n"):  # finish the last line, wherever it ends
            rest = [data]
            while piece := f.read(1 << 16):
                newline = piece.find(b"\n")
                rest.append(piece if newline < 0 else piece[:newline + 1])
                if newline >= 0:
                    break
            data = b"".join(rest)
    lines = data.split(b"\n")
    tail = lines.pop()
    return lines, ((offset + len(data) - len(tail), tail) if tail else None)


def _claimed_seq(line: bytes) -> int | None:
    """The sequence number a line claims, read as `scan_chunk` reads it (None: the line is unreadable)."""
    found = tail_match(line)
    if found is not None:
        return int(found[1].group(5))
    entry, _ = _parse_entry(line)
    return None if entry is None else entry["seq"]


def _scan_range(path: str, offset: int, end: int, public_raw: bytes, want: frozenset[int]) -> ChunkScan:
    """`scan_chunk` on the lines that start in bytes [offset, end) of the log. The chunk's index in
    the log is the one its first line claims (the caller, who knows where the previous chunk
    ended, checks the claim); `start` is -1 when that line is unreadable."""
    lines, torn = lines_starting_in(path, offset, end)
    claimed = _claimed_seq(lines[0]) if lines else None
    scan = scan_chunk(claimed if claimed is not None else 0, lines, public_raw, want)
    return dataclasses.replace(scan, start=-1 if lines and claimed is None else scan.start, torn_tail=torn)


def _scans(path: Path, public_raw: bytes, want: frozenset[int], workers: int) -> Iterator[ChunkScan]:
    """Scans of the log's byte ranges of CHUNK_BYTES, in order, computed here or on `workers`
    processes (a bounded number in flight, so memory stays bounded however long the log is)."""
    size = path.stat().st_size
    ranges = [(offset, min(offset + CHUNK_BYTES, size)) for offset in range(0, size, CHUNK_BYTES)]
    if workers <= 1:
        for offset, end in ranges:
            yield _scan_range(str(path), offset, end, public_raw, want)
        return
    # fork: the workers need nothing but this module, and start in milliseconds (spawn would
    # re-import it); `verify` only asks for workers when this process runs no other threads.
    # Each worker reads its own range: the parent reads nothing.
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        in_flight: collections.deque[concurrent.futures.Future[ChunkScan]] = collections.deque()
        for offset, end in ranges:
            in_flight.append(pool.submit(_scan_range, str(path), offset, end, public_raw, want))
            if len(in_flight) > 2 * workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def default_workers(path: Path) -> int:
    """All cores for a long log, when fork is safe here (no other threads); else this process."""
    if (path.stat().st_size < PARALLEL_BYTES or threading.active_count() > 1
            or "fork" not in multiprocessing.get_all_start_methods()):
        return 1
    return min(2, os.cpu_count() or 1)


def verify(path: Path | str, public: Ed25519PublicKey, allow_unsigned_tail: bool = False,
           allow_missing_head: bool = False, witness: Path | str | None = None,
           workers: int | None = None) -> VerifyReport:
    """Check a log. Strict by default: entries after the last checkpoint (not yet signed), a
    missing signed head, a missing or empty log all fail; `witness` (a witness store) adds
    the check that the log is neither shorter than nor inconsistent with any head it saw.

    The log is read in byte ranges of CHUNK_BYTES (bounded memory, whatever its length);
    `workers` processes check chunks in parallel (default: both cores for a log of
    PARALLEL_BYTES or more). The report is the same whichever way it was computed."""
    path = Path(path)
    kid = key_id(public)
    if not path.exists():
        return VerifyReport(False, 0, 0, 0, 0, Problem(0, f"{path} does not exist", INPUT), kid)
    if path.stat().st_size == 0:
        return VerifyReport(False, 0, 0, 0, 0, Problem(0, f"{path} is empty: there is nothing to verify", INPUT), kid)
    witnessed = _witnessed_heads(witness, kid) if witness is not None else []
    if isinstance(witnessed, str):
        return VerifyReport(False, 0, 0, 0, 0, Problem(0, witnessed, INPUT), kid)
    want = frozenset(h["tree_size"] for h in witnessed)
    frontier = MerkleFrontier()  # of the chunks so far: their subtrees, put together in order
    prev = GENESIS
    checkpoints = signed = n = 0
    roots: dict[int, str] = {}
    prefix_roots: dict[int, str] = {0: frontier.root().hex()} if 0 in want else {}
    torn_tail: tuple[int, bytes] | None = None
    public_raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    scans = _scans(path, public_raw, want, workers if workers is not None else default_workers(path))

    def fail(i: int, reason: str, line: int | None = None) -> VerifyReport:
        scans.close()  # stops the workers; the entries after a problem are only counted
        problem = Problem(i + 1 if line is None else line, reason)
        return VerifyReport(False, _count_lines(path), i, checkpoints, signed, problem, kid, len(witnessed))

    for scan in scans:
        torn_tail = scan.torn_tail or torn_tail
        if not scan.count:
            continue
        if scan.start < 0:  # its first line is unreadable: that is the problem, at the index it should have had
            return fail(n, scan.problem[1])
        if scan.start != n:
            return fail(n, f"sequence number {scan.start} where {n} was expected (an entry was deleted, inserted or moved)")
        if scan.first_prev is not None and scan.first_prev != prev:
            return fail(n, "hash chain broken: 'prev' does not match the previous entry (deleted or reordered)")
        for i, body, before in scan.checkpoints:
            if body["root"] != frontier.root(before).hex():
                return fail(i, "checkpoint does not match the entries before it (root, size or chain head)")
            checkpoints += 1
            signed = i + 1  # the entries before it and the signed checkpoint itself
            roots[i] = body["root"]
        for size, before in scan.prefixes.items():
            prefix_roots[size] = frontier.root(before).hex()
        if scan.problem is not None:
            return fail(*scan.problem)
        for size, root in scan.subtrees:
            frontier.add_subtree(size, root)
        prev = scan.last_hash
        n = scan.start + scan.count

    if torn_tail is not None:
        offset, torn = torn_tail
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
        bad = signature_problem(head, public, kid)
        if bad:
            return fail(n, f"{head_path.name}: {bad}", line=0)
        size = head["tree_size"]
        if size > n:
            return fail(n, f"truncated: the signed head covers {size} entries, the log has {n}", line=n)
        if roots.get(size) != head["root"]:
            return fail(n, f"the signed head (size {size}) matches no checkpoint in the log", line=0)
        if roots and size < max(roots):
            return fail(n, f"the signed head (size {size}) is older than the last checkpoint (size {max(roots)}): "
                           "an old head was put back, or the writer was killed between the checkpoint and the "
                           "head; one checkpoint behind (what a kill leaves), opening the log with its key "
                           "catches the head up and logs that it did",
                        line=0)
    if signed < n and not allow_unsigned_tail:
        return fail(signed, f"{n - signed} entries after the last checkpoint are not signed: they could have been "
                            "appended by anyone; pass --allow-unsigned-tail for a log still being written",
                    line=signed + 1)
    return VerifyReport(True, n, n, checkpoints, signed, None, kid, len(witnessed))


def _count_lines(path: Path) -> int:
    """Complete lines in a file, counted a block at a time."""
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


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
    if signature_problem(cp, public, key_id(public)) is not None or cp["tree_size"] != proof.get("tree_size"):
        return False
    try:
        path = [bytes.fromhex(p) for p in proof["path"]]
        root = bytes.fromhex(cp["root"])
    except (ValueError, TypeError):
        return False
    return verify_inclusion(proof["seq"], proof["tree_size"], leaf_hash(proof["entry"].encode()), path, root)
