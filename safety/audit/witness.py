"""Witnesses: a second party that remembers a log's signed heads, so history cannot move
backward or fork unseen (Certificate Transparency's answer to rollback).

`Witness(store).cosign(log, log_public_key)` reads the log's signed head, checks the log
verifies up to it, and checks with a consistency proof (RFC 9162) built from the log's own
entries that the head extends every head this witness co-signed before for the same log
key; only then it signs the head with the witness's own Ed25519 key and appends the
co-signature to `heads.jsonl` in its store (one `O_APPEND` write of one line: a witness
killed mid-write loses at most that line, whose fragment the next co-signing moves aside
to `heads.jsonl.torn-<offset>`). `verify(..., witness=store)` then fails a log that
is shorter than, or inconsistent with, any co-signed head. The bridge's robot side and the
policy side, or the rollout ladder and a robot, can witness each other's logs.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from safety.audit import keys
from safety.audit.log import LineStream, canonical, quarantine_torn_tail, read_lines
from safety.audit.merkle import consistency_proof, leaf_hash, verify_consistency

HEADS = "heads.jsonl"
KEY, PUBLIC = "witness-key.pem", "witness-key.pub"


class WitnessError(ValueError):
    """The witness refuses: the log is not consistent with what it saw, or its store is damaged."""


def _cosigned_payload(head: dict[str, Any]) -> bytes:
    return canonical({k: head[k] for k in ("log_key_id", "tree_size", "root", "chain_head", "log_signature",
                                           "witnessed_at", "witness_key_id")})


def _store_public(store: Path) -> Ed25519PublicKey:
    if not (store / PUBLIC).exists():
        raise WitnessError(f"{store} is not a witness store (no {PUBLIC}); create one with `shakedown audit witness`")
    return keys.load_public(store / PUBLIC)


def witnessed_heads(store: Path, log_key_id: str) -> list[dict[str, Any]]:
    """The heads this witness co-signed for a log key, each signature checked; WitnessError
    names the line of a damaged store (a torn last line is skipped: it was never complete)."""
    public = _store_public(store)
    wid = keys.key_id(public)
    out = []
    for i, line in enumerate(read_lines(store / HEADS).lines):
        try:
            head = json.loads(line)
            public.verify(bytes.fromhex(head["witness_signature"]), _cosigned_payload(head))
        except (ValueError, KeyError, TypeError, InvalidSignature) as exc:
            raise WitnessError(f"{store / HEADS} line {i + 1} is not a valid co-signed head ({exc!r})") from None
        if head["witness_key_id"] != wid:
            raise WitnessError(f"{store / HEADS} line {i + 1} was signed by another witness key")
        if head["log_key_id"] == log_key_id:
            out.append(head)
    return out


class Witness:
    """A witness with its own key and append-only store (created on first use)."""

    def __init__(self, store: Path | str) -> None:
        self.store = Path(store)
        self.store.mkdir(parents=True, exist_ok=True)
        if not (self.store / KEY).exists():
            keys.generate(self.store / KEY, self.store / PUBLIC)
        self.key: Ed25519PrivateKey = keys.load_private(self.store / KEY)
        self.key_id = keys.key_id(self.key.public_key())

    def cosign(self, log_path: Path | str, log_public: Ed25519PublicKey) -> dict[str, Any]:
        """Co-sign the log's current signed head after checking it; WitnessError says why not."""
        from safety.audit.verify import malformed_head, verify

        log_path = Path(log_path)
        report = verify(log_path, log_public, allow_unsigned_tail=True)
        if not report.ok:
            raise WitnessError(f"the log does not verify, nothing co-signed: {report.summary()}")
        head = json.loads(log_path.with_name(log_path.name + ".head.json").read_text())
        if malformed_head(head):
            raise WitnessError("the log's head file is malformed")
        # streamed: only the leaf hashes are held, not the log
        leaves = [leaf_hash(line) for line in itertools.islice(LineStream(log_path), head["tree_size"])]
        log_kid = keys.key_id(log_public)
        for seen in witnessed_heads(self.store, log_kid):
            proof = consistency_proof(seen["tree_size"], leaves) if seen["tree_size"] <= len(leaves) else None
            if proof is None or not verify_consistency(seen["tree_size"], head["tree_size"], bytes.fromhex(seen["root"]),
                                                       bytes.fromhex(head["root"]), proof):
                raise WitnessError(f"the head of size {head['tree_size']} is not consistent with the head of size "
                                   f"{seen['tree_size']} co-signed at {seen['witnessed_at']:.0f}: the log was cut back "
                                   "or rewritten; refusing to co-sign")
        cosigned = {"log_key_id": log_kid, "tree_size": head["tree_size"], "root": head["root"],
                    "chain_head": head["chain_head"], "log_signature": head["signature"], "witnessed_at": time.time(),
                    "witness_key_id": self.key_id}
        cosigned["witness_signature"] = self.key.sign(_cosigned_payload(cosigned)).hex()
        torn = read_lines(self.store / HEADS).torn_tail
        if torn is not None:  # a witness killed mid-write: keep the fragment aside, never append onto it
            quarantine_torn_tail(self.store / HEADS, *torn)
        fd = os.open(self.store / HEADS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, canonical(cosigned) + b"\n")
        finally:
            os.close(fd)
        return cosigned
