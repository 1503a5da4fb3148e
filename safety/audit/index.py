"""Audits across runs: many logs in one embedded database (SQLite, in the standard library).

`index_logs(db, logs)` verifies each log (strictly, with the key beside it or the one given)
and loads its entries into `db`: one row per entry with what auditors filter on (kind,
time, policy id, instruction, chain of thought, parse status, shield interventions, summed
cost, robot, rollout rung, contradiction flags) and the full body as JSON. A log that does
not verify is recorded with the reason and none of its entries are loaded: answers never
mix verified and unverified history. Re-indexing a log replaces its rows (the file's SHA-256
says whether it changed). `query(db, ...)` and `rates(db, by=...)` answer across every run,
policy and robot in one SQL statement each.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from safety.audit.log import iter_entries
from safety.audit.search import intervened, total_cost
from safety.audit.verify import verify

SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE, sha256 TEXT, key_id TEXT, entries INTEGER, ok INTEGER,
    summary TEXT, indexed_at REAL);
CREATE TABLE IF NOT EXISTS entries (
    log_id INTEGER, seq INTEGER, kind TEXT, time REAL, policy_id TEXT, instruction TEXT, thought TEXT,
    parse_status TEXT, intervened INTEGER, cost REAL, robot TEXT, rung TEXT, flags INTEGER, body TEXT,
    PRIMARY KEY (log_id, seq));
CREATE INDEX IF NOT EXISTS entries_policy ON entries (policy_id, kind);
CREATE INDEX IF NOT EXISTS entries_time ON entries (time);
"""
GROUPS = {"policy": "policy_id", "robot": "robot", "rung": "rung", "log": "path", "day": "date(time, 'unixepoch')"}
"""What `rates` can group by."""

Flagger = Callable[[Mapping[str, Any]], list[str]]
"""A decision record's body -> its flags (safety.audit.flags.decision_flags with a reference)."""
"""(thought, action) -> contradiction flags (the caller supplies its task's rules and reference)."""


def connect(db: Path | str) -> sqlite3.Connection:
    conn = sqlite3.connect(db)
    conn.executescript(SCHEMA)
    return conn


def index_logs(db: Path | str, logs: Iterable[Path | str], public: Ed25519PublicKey | None = None,
               flagger: Flagger | None = None) -> list[dict[str, Any]]:
    """Verify and load each log; one summary per log (path, ok, entries, summary)."""
    from safety.audit.keys import load_public

    out = []
    with connect(db) as conn:
        for path in map(Path, logs):
            key = public
            if key is None:
                beside = path.parent / "audit-key.pub"
                if not beside.exists():
                    out.append({"path": str(path), "ok": False, "entries": 0,
                                "summary": "no audit-key.pub beside the log and no --key given: not indexed"})
                    continue
                key = load_public(beside)
            out.append(_index_one(conn, path.resolve(), key, flagger))
    return out


def _index_one(conn: sqlite3.Connection, path: Path, public: Ed25519PublicKey,
               flagger: Flagger | None) -> dict[str, Any]:
    report = verify(path, public)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""
    conn.execute("DELETE FROM entries WHERE log_id IN (SELECT id FROM logs WHERE path = ?)", (str(path),))
    conn.execute("INSERT INTO logs (path, sha256, key_id, entries, ok, summary, indexed_at) VALUES (?,?,?,?,?,?,?) "
                 "ON CONFLICT(path) DO UPDATE SET sha256=excluded.sha256, key_id=excluded.key_id, "
                 "entries=excluded.entries, ok=excluded.ok, summary=excluded.summary, indexed_at=excluded.indexed_at",
                 (str(path), digest, report.key_id, report.entries, int(report.ok), report.summary(), time.time()))
    log_id = conn.execute("SELECT id FROM logs WHERE path = ?", (str(path),)).fetchone()[0]
    if report.ok:
        conn.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         (_row(log_id, e, flagger) for e in iter_entries(path) if e.get("kind") != "checkpoint"))
    return {"path": str(path), "ok": report.ok, "entries": report.entries, "summary": report.summary()}


def _row(log_id: int, entry: dict[str, Any], flagger: Flagger | None) -> tuple:
    body = entry.get("body") or {}
    context = body.get("context") or {}
    action = body.get("action") or {}
    flags = len(flagger(body)) if flagger and isinstance(action, dict) else 0
    return (log_id, entry["seq"], entry["kind"], entry.get("time"), str(body.get("policy_id", "")),
            str(body.get("instruction", "")), str(body.get("thought", "")), str(body.get("parse_status", "")),
            int(intervened(body)), total_cost(body), str(context.get("robot", "")), str(context.get("rung", "")),
            flags, json.dumps(body))


def query(db: Path | str, kind: str | None = "decision", policy: str | None = None, thought: str | None = None,
          interventions: bool = False, min_cost: float | None = None, since: float | None = None,
          until: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Entries of every verified log matching all given criteria, newest first."""
    where, args = ["1=1"], []
    for clause, value in (("e.kind = ?", kind), ("e.policy_id LIKE ? || '%'", policy),
                          ("lower(e.thought) LIKE '%' || lower(?) || '%'", thought), ("e.cost >= ?", min_cost),
                          ("e.time >= ?", since), ("e.time <= ?", until)):
        if value is not None:
            where.append(clause)
            args.append(value)
    if interventions:
        where.append("e.intervened = 1")
    sql = (f"SELECT l.path, e.seq, e.kind, e.time, e.policy_id, e.instruction, e.thought, e.intervened, e.cost, "
           f"e.flags, e.body FROM entries e JOIN logs l ON l.id = e.log_id WHERE {' AND '.join(where)} "
           f"ORDER BY e.time DESC LIMIT ?")
    with connect(db) as conn:
        rows = conn.execute(sql, (*args, limit)).fetchall()
    keys = ("log", "seq", "kind", "time", "policy_id", "instruction", "thought", "intervened", "cost", "flags", "body")
    return [dict(zip(keys, r[:-1]), body=json.loads(r[-1])) for r in rows]


def rates(db: Path | str, by: str = "policy") -> list[dict[str, Any]]:
    """Per group: decisions, and the share with a shield intervention, with a contradiction
    flag, and with a failed parse."""
    if by not in GROUPS:
        raise ValueError(f"cannot group by {by!r}; choose one of {sorted(GROUPS)}")
    sql = (f"SELECT {GROUPS[by]} AS g, count(*), avg(e.intervened), avg(e.flags > 0), "
           f"avg(e.parse_status LIKE 'fallback%'), avg(e.cost) FROM entries e JOIN logs l ON l.id = e.log_id "
           f"WHERE e.kind = 'decision' GROUP BY g ORDER BY g")
    with connect(db) as conn:
        rows = conn.execute(sql).fetchall()
    return [{by: g, "decisions": n, "intervention_rate": iv, "contradiction_rate": fl, "parse_failure_rate": pf,
             "mean_cost": c} for g, n, iv, fl, pf, c in rows]
