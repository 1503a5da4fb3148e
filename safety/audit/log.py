"""An append-only, hash-chained, Merkle-checkpointed log of decisions (one JSON entry a line).

Each entry: {"seq", "kind", "time", "body", "prev", "hash"} with
hash = SHA-256(canonical JSON of the entry without "hash"); "prev" is the previous entry's
hash, so changing, deleting or reordering an entry breaks the chain. Every
`checkpoint_every` entries a checkpoint entry records the Merkle root (RFC 6962) of all
entries before it, signed with Ed25519; the latest signed head is also kept beside the
log (`<log>.head.json`), so cutting entries off the end is detected too.

Appends are one `os.write` of one whole line on an O_APPEND descriptor: a process killed
between appends loses nothing, one killed mid-append loses at most that entry, and a torn
(partial) last line is detected on the next open and reported; `repair=True` moves it to
a quarantine file and records that in the chain, so nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from safety.audit.keys import key_id
from safety.audit.merkle import MerkleFrontier, leaf_hash

GENESIS = "0" * 64


class AuditError(ValueError):
    """The log cannot be used as asked; the message says where and what to do."""


class TornTailError(AuditError):
    """The log ends in a partial line (a write was cut off)."""


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """How the log is written."""

    checkpoint_every: int = 100
    """Entries between signed Merkle checkpoints."""
    fsync: bool = False
    """fsync after every append: survives power loss, not only a killed process (slower)."""

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise AuditError("AuditConfig.checkpoint_every must be >= 1")


_PLAIN = (str, int, bool, type(None))


def jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays become numbers and lists; NaN/inf become strings."""
    t = type(obj)
    if t in _PLAIN:  # the common case first: exact-type checks are much cheaper than ABC checks
        return obj
    if t is float:
        return obj if math.isfinite(obj) else repr(obj)
    if t is dict:
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else repr(f)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def _escape_surrogates(obj: Any) -> Any:
    """Strings with lone surrogates (not encodable as UTF-8) with each one written as a visible
    escape (the two-character backslash-u form), so the evidence stays in the record."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, dict):
        return {_escape_surrogates(k): _escape_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_escape_surrogates(v) for v in obj]
    return obj


def _body_json(body: Mapping[str, Any]) -> tuple[Any, bytes]:
    """The body and its JSON bytes, keys sorted. Plain bodies go through orjson (~8x faster than
    the standard library here); orjson writes NaN and infinities as null, so a body whose bytes
    hold a null takes the standard library's path, which refuses them; numpy values, NaN or
    infinities then go through `jsonable`, lone surrogates become visible escapes. (orjson and
    the standard library differ only in how they spell exponents, 1e-5 vs 1e-05; verify hashes
    the bytes as written, so either spelling verifies.)"""
    try:
        data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        if b"null" not in data:
            return body, data
    except (TypeError, ValueError):  # numpy values, non-string keys, huge ints, lone surrogates
        pass
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        body = jsonable(body)
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return body, text.encode()
    except UnicodeEncodeError:  # a lone surrogate cannot be UTF-8
        body = _escape_surrogates(body)
        return body, canonical(body)


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def entry_hash(entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def head_payload(body: Mapping[str, Any]) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return canonical({k: body[k] for k in ("tree_size", "root", "chain_head", "key_id", "signed_at")})


def signature_problem(body: Mapping[str, Any], public: Ed25519PublicKey, kid: str) -> str | None:
    """What is wrong with a checkpoint body's (or head's) signature under the trusted key, or None."""
    if body.get("key_id") != kid:
        return f"checkpoint signed by key {body.get('key_id')!r}, not the trusted key {kid}"
    try:
        public.verify(bytes.fromhex(body["signature"]), head_payload(body))
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return "checkpoint signature does not verify (forged or altered checkpoint)"
    return None


@dataclasses.dataclass
class LogContents:
    """What is in a log file, as read (not yet verified)."""

    lines: list[bytes]
    """Complete lines, without the newline."""
    torn_tail: tuple[int, bytes] | None
    """(byte offset, bytes) of a partial last line, if any."""


TAIL_PATTERN = re.compile(rb',"hash":"([0-9a-f]{64})"(,"kind":"([^"\\\\]*)","prev":"([0-9a-f]{64})","seq":(0|[1-9][0-9]*),'
                   rb'"time":-?[0-9][0-9.e+-]*})')


def tail_match(line: bytes) -> tuple[int, re.Match[bytes]] | None:
    """Where a canonical line's fixed-shape tail starts and its match (groups: hash, the hashed
    tail, kind, prev, seq), or None for a line of any other shape.

    Keys sort as body < hash < kind < prev < seq < time, so a canonical line is the body, then
    the tail; the writer hashed the line without its hash field, i.e. line[:at] + group 2.
    The last `,"hash":"` is the top-level one (a body's own ones come before it)."""
    if not line.startswith(b'{"body":{'):  # an object body; anything else gets the full parse
        return None
    at = line.rfind(b',"hash":"')
    m = TAIL_PATTERN.fullmatch(line, at) if at > 0 else None
    return None if m is None else (at, m)


def line_fields(line: bytes) -> tuple[int, str, str, str, bytes, bytes] | None:
    """(seq, kind, prev, hash, hashed bytes, body bytes) of a canonical line, read without parsing its body.

    A line of any other shape returns None and gets the full parse. Hashing the bytes as they
    are also covers what the canonical-form check did: any edit changes the hash, the chain
    or a signed root."""
    found = tail_match(line)
    if found is None:
        return None
    at, m = found
    return (int(m.group(5)), m.group(3).decode(), m.group(4).decode(), m.group(1).decode(), line[:at] + m.group(2),
            line[8:at])


def _signed_head_size(head_path: Path) -> int:
    """Entries the head file beside a log says were signed (0 without a readable head)."""
    try:
        size = json.loads(head_path.read_text()).get("tree_size", 0)
    except (OSError, ValueError, AttributeError):
        return 0
    return size if isinstance(size, int) and not isinstance(size, bool) else 0


class LineStream:
    """The complete lines of a file, read a block at a time: memory is bounded by the block and
    the longest line, whatever the file's size. After iterating, `torn_tail` holds the
    (byte offset, bytes) of a partial last line (a write that was cut off), if any. A missing
    file has no lines."""

    def __init__(self, path: Path | str, block: int = 1 << 20) -> None:
        self.path = Path(path)
        self.block = block
        self.torn_tail: tuple[int, bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        self.torn_tail = None
        if not self.path.exists():
            return
        carry, offset = b"", 0
        with open(self.path, "rb") as f:
            while block := f.read(self.block):
                offset += len(block)
                lines = (carry + block if carry else block).split(b"\n")
                carry = lines.pop()  # after the last newline: the start of the next line
                yield from lines
        if carry:
            self.torn_tail = (offset - len(carry), carry)


def read_lines(path: Path) -> LogContents:
    """All of a (small) file's lines in memory; long logs are read with `LineStream`."""
    stream = LineStream(path)
    lines = list(stream)
    return LogContents(lines, stream.torn_tail)


def quarantine_torn_tail(path: Path, offset: int, torn: bytes) -> Path:
    """Keep a torn last line's bytes in `<name>.torn-<offset>` (written and synced first, so a
    kill at any point loses nothing), then cut the file back to the last whole line."""
    quarantine = path.with_name(f"{path.name}.torn-{offset}")
    if not quarantine.exists() or quarantine.read_bytes() != torn:
        tmp = quarantine.with_name(quarantine.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(torn)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, quarantine)
    os.truncate(path, offset)
    return quarantine


class AuditLog:
    """Writer. Use as a context manager; closing writes a final checkpoint."""

    def __init__(self, path: Path | str, signing_key: Ed25519PrivateKey, config: AuditConfig | None = None,
                 repair: bool = False) -> None:
        self.path = Path(path)
        self.key = signing_key
        self.key_id = key_id(signing_key.public_key())
        self.config = config or AuditConfig()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frames_dir = self.path.with_name(self.path.name + ".frames")
        self.head_path = self.path.with_name(self.path.name + ".head.json")
        self._frontier = MerkleFrontier()
        self._prev = GENESIS
        self._since_checkpoint = 0
        stream = LineStream(self.path)  # streamed: opening a long log does not hold it in memory
        # The last checkpoint that matches the entries before it, and the size of the one before that
        count, last_checkpoint, size_before = 0, None, 0
        for i, line in enumerate(stream):
            count += 1
            fields = line_fields(line)
            if (fields is None or fields[0] != i or fields[2] != self._prev
                    or hashlib.sha256(fields[4]).hexdigest() != fields[3]):
                raise AuditError(f"{self.path}: entry on line {i + 1} is invalid (not a well-formed entry, or the "
                                 "chain does not hold); run `shakedown audit verify` on it; appending to a damaged "
                                 "log is refused")
            if fields[1] == "checkpoint":
                body = json.loads(line).get("body")
                if (isinstance(body, dict) and body.get("tree_size") == i and body.get("chain_head") == self._prev
                        and body.get("root") == self._frontier.root().hex()):
                    size_before = last_checkpoint["tree_size"] if last_checkpoint else 0
                    last_checkpoint = body
            self._frontier.add(leaf_hash(line))
            self._prev = fields[3]
            self._since_checkpoint = 0 if fields[1] == "checkpoint" else self._since_checkpoint + 1
        signed_size = _signed_head_size(self.head_path)
        if signed_size and signed_size + 1 > count:  # the head's checkpoint is entry `signed_size`
            # Fewer complete entries than the signed head covers: entries were removed, not torn by a
            # crash (a crash tears at most the entry after the head). Appending (or repairing) would
            # sign the shorter history and launder the removal.
            raise AuditError(f"{self.path}: {count} complete entries but the signed head covers "
                             f"{signed_size} and its checkpoint: entries were cut off; this is tampering, not a torn write, and "
                             "history is never moved backward; keep the file as evidence and start a new log")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if stream.torn_tail is not None:
            offset, torn = stream.torn_tail
            if not repair:
                os.close(self._fd)
                raise TornTailError(
                    f"{self.path}: the last {len(torn)} bytes (from byte {offset}) are a partial entry, "
                    "cut off mid-write; open with repair=True (or `shakedown audit repair`) to quarantine "
                    "them and continue")
            quarantine_torn_tail(self.path, offset, torn)
        # Bytes quarantined from where the log now ends have no record yet (a record would start
        # there): this repair, or one killed after cutting them off. Record it, so none goes unlogged.
        end = os.fstat(self._fd).st_size
        quarantine = self.path.with_name(f"{self.path.name}.torn-{end}")
        if quarantine.exists():
            torn = quarantine.read_bytes()
            self.append("repair", {"torn_offset": end, "torn_bytes": len(torn),
                                   "torn_sha256": hashlib.sha256(torn).hexdigest(), "quarantined_to": quarantine.name})
        self._catch_up_head(last_checkpoint, size_before, signed_size)

    @property
    def size(self) -> int:
        """Entries in the log."""
        return self._frontier.size

    def append(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Append one entry; returns it (with seq and hash). Checkpoints follow automatically."""
        entry = self._write(kind, body)
        if kind != "checkpoint":
            self._since_checkpoint += 1
            if self._since_checkpoint >= self.config.checkpoint_every:
                self.checkpoint()
        return entry

    def _write(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        # The canonical line is built from its parts, serializing the body once: keys sort as
        # body < hash < kind < prev < seq < time, so the hashed bytes are the line without its
        # hash field (`entry_hash` of the same entry gives the same digest; a test checks it).
        seq, now, prev = self._frontier.size, time.time(), self._prev
        body, body_json = _body_json(body)
        tail = f',"kind":{json.dumps(kind, ensure_ascii=False)},"prev":"{prev}","seq":{seq},"time":{float(now)!r}}}'.encode()
        head = b'{"body":' + body_json
        digest = hashlib.sha256(head + tail).hexdigest()
        line = head + b',"hash":"' + digest.encode() + b'"' + tail
        os.write(self._fd, line + b"\n")  # one write of one whole line
        if self.config.fsync:
            os.fsync(self._fd)
        self._frontier.add(leaf_hash(line))
        self._prev = digest
        return {"seq": seq, "kind": kind, "time": now, "body": body, "prev": prev, "hash": digest}

    def checkpoint(self) -> dict[str, Any]:
        """Sign the Merkle root of everything so far; also refresh the head file beside the log."""
        body = {"tree_size": self._frontier.size, "root": self._frontier.root().hex(), "chain_head": self._prev,
                "key_id": self.key_id, "signed_at": time.time()}
        body["signature"] = self.key.sign(head_payload(body)).hex()
        entry = self._write("checkpoint", body)
        self._since_checkpoint = 0
        self._write_head(body)
        return entry

    def _write_head(self, body: Mapping[str, Any]) -> None:
        # After the checkpoint's line: a kill between the two leaves the head one checkpoint behind
        # (caught up on the next open), never ahead of the log (which would read as a truncation).
        tmp = self.head_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=1))
        os.replace(tmp, self.head_path)

    def _catch_up_head(self, last: dict[str, Any] | None, size_before: int, signed_size: int) -> None:
        """Bring the head file up to the last checkpoint in exactly the state a kill leaves: the head
        at the checkpoint before it (or missing before the first), the last checkpoint matching the
        entries before it and signed by this log's key. The move is itself logged ("head_caught_up",
        from and to which size), so it is on the record. Any other stale head is left as verify's evidence."""
        if (last is None or signed_size != size_before
                or signature_problem(last, self.key.public_key(), self.key_id) is not None):
            return
        self._write_head(last)
        self.append("head_caught_up", {"from_size": signed_size, "to_size": last["tree_size"],
                                       "why": "the head file was one checkpoint behind the log, as a writer killed "
                                              "between the checkpoint and the head leaves it"})

    def store_frame(self, image: np.ndarray) -> str:
        """Save a camera frame as PNG beside the log; returns its SHA-256 (recorded in entries)."""
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        self.frames_dir.mkdir(exist_ok=True)
        target = self.frames_dir / f"{digest}.png"
        if not target.exists():
            target.write_bytes(data)
        return digest

    def close(self) -> None:
        if self._fd is None:
            return
        if self._since_checkpoint:
            self.checkpoint()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_entries(path: Path | str) -> Iterator[dict[str, Any]]:
    """Entries that parse, in order (for search and reports; use verify for trust)."""
    for line in LineStream(path):
        try:
            yield json.loads(line)
        except ValueError:
            continue
