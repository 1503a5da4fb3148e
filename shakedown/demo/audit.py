"""Part 4 of the demo: the audit anyone can check.

Every signed log the other parts wrote (decisions with their chains of thought, shield
interventions, the robot's refusals and safe stops, the ladder's promotions) is verified
strictly, co-signed by an independent witness (whose store then catches any later cut or
rewrite), verified again against that witness, and indexed into one SQLite database where
the decisions' flags are counted: a thought that disagrees with its own action
(faithfulness), with the drive that followed, or with a keyword rule.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from safety.audit.index import connect, index_logs, rates
from safety.audit.keys import load_public
from safety.audit.verify import verify
from safety.audit.witness import Witness, WitnessError
from shakedown.audit_report import car_flags, write_audit_report
from shakedown.demo.part import Part, SignedLog, Table
from shakedown.report import HtmlReport

FLAG_KINDS = (("thought vs its action", "but the action has"), ("thought vs the drive", "but the drive that followed"))
"""How a flag's text says what it was checked against (safety.audit.claims.Flag); other flags are keyword rules."""


def flag_kind(flag: str) -> str:
    """'thought vs its action' (faithfulness), 'thought vs the drive', or 'keyword rule'."""
    return next((kind for kind, marker in FLAG_KINDS if marker in flag), "keyword rule")


def count_flags(db: Path) -> dict[str, dict[str, int]]:
    """Per policy: decisions, decisions with any flag, and flags of each kind, over every indexed decision."""
    counts: dict[str, dict[str, int]] = collections.defaultdict(collections.Counter)
    with connect(db) as conn:
        for policy, body in conn.execute("SELECT policy_id, body FROM entries WHERE kind = 'decision'"):
            flags = car_flags(json.loads(body))
            c = counts[policy]
            c["decisions"] += 1
            c["flagged"] += bool(flags)
            for flag in flags:
                c[flag_kind(flag)] += 1
    return {policy: dict(c) for policy, c in sorted(counts.items())}


def audit_part(logs: list[SignedLog], out: Path, title: str = "4. The audit") -> Part:
    """Verify, witness, re-verify against the witness, and index `logs`; the report of the main decision log."""
    witness = Witness(out / "witness")
    db = out / "audits.db"
    rows, ok = [], True
    for log in logs:
        public = load_public(log.public_key)
        indexed = index_logs(db, [log.path], public, car_flags)[0]  # verified strictly first: only then loaded
        try:
            head = witness.cosign(log.path, public)
            cosigned = f"{head['tree_size']} entries"
        except WitnessError as exc:
            cosigned = f"REFUSED: {exc}"
        against = verify(log.path, public, witness=out / "witness")
        ok &= indexed["ok"] and against.ok
        rows.append([log.what, indexed["entries"], "ok" if indexed["ok"] else f"FAILED: {indexed['summary']}", cosigned,
                     "ok" if against.ok else f"FAILED: {against.summary()}", "yes" if indexed["ok"] else "no"])
    flags = count_flags(db)
    by_policy = {r["policy"]: r for r in rates(db, by="policy")}
    flag_rows = [[policy, c["decisions"], c.get("flagged", 0), c.get(FLAG_KINDS[0][0], 0), c.get(FLAG_KINDS[1][0], 0),
                  c.get("keyword rule", 0), f"{100 * (by_policy.get(policy, {}).get('intervention_rate') or 0):.0f} %",
                  f"{100 * (by_policy.get(policy, {}).get('parse_failure_rate') or 0):.0f} %"]
                 for policy, c in flags.items()]
    links = []
    if logs:  # the first log is the richest: the decisions of part 1, with their thoughts
        links.append(("audit report of " + logs[0].what,
                      write_audit_report(logs[0].path, load_public(logs[0].public_key), out / "audit.html")))
    tables = [Table.of("Every signed log: verified strictly, co-signed by a witness, verified against it, indexed",
                       ["log", "entries", "verify", "witness co-signed", "verify --witness", "indexed"], rows),
              Table.of(f"Decisions across every log ({db.name}): flags by what the thought disagrees with",
                       ["policy", "decisions", "flagged", "vs its action", "vs the drive", "keyword rules",
                        "shield intervened", "failed parses"], flag_rows)]

    def section(report: HtmlReport) -> None:
        report.text("Each log is a hash chain with Merkle checkpoints signed by Ed25519 (RFC 9162 trees). The witness "
                    "keeps its own key and the heads it co-signed: a log later cut back or rewritten below a "
                    "witnessed head fails `verify --witness`. The index holds only verified history.")

    commands = [(f"verify {log.what}", f"shakedown audit verify {log.path} --key {log.public_key} "
                                       f"--witness {out / 'witness'}") for log in logs[:2]]
    commands.append(("search every decision whose thought mentions speed",
                     f"shakedown audit search {db} --thought speed"))
    return Part("audit", title, tables, {"all_verified": ok, "logs": rows, "flags": flags}, section,
                links=links, commands=commands, logs=[])
