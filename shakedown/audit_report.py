"""`shakedown audit report`: one HTML page an auditor reads top to bottom.

Verification result first; then a timeline of decisions (cost and interventions over
time), the interventions by reason, and every decision with its chain of thought beside
its action and camera frame, flagged where the thought contradicts the action or the drive
that followed (safety.audit.flags: the claims it makes, with their numbers and units).
"""

from __future__ import annotations

import base64
import collections
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agents.control.mpc_params import DEFAULT
from safety.audit.flags import decision_flags
from safety.audit.log import iter_entries
from safety.audit.search import intervened, total_cost
from safety.audit.verify import verify
from shakedown.report import HtmlReport, plt


def car_flags(body: Mapping[str, Any]) -> list[str]:
    """A car decision's flags (safety.audit.flags) judged against the default MPC parameters: the reference
    the report, `shakedown audit index` and the demo all use, so they count the same flags."""
    return decision_flags(body, DEFAULT.as_dict())


def _frame_html(frames_dir: Path, digest: str | None) -> str:
    if not digest:
        return ""
    f = frames_dir / f"{digest}.png"
    if not f.exists():
        return f"<em>frame {digest[:12]} missing</em>"
    data = base64.b64encode(f.read_bytes()).decode()
    return f'<img width=128 style="image-rendering:pixelated" src="data:image/png;base64,{data}"/>'


def write_audit_report(log_path: Path, public: Ed25519PublicKey, out: Path, max_decisions: int = 200) -> Path:
    log_path = Path(log_path)
    report = verify(log_path, public)
    decisions = [e for e in iter_entries(log_path) if e.get("kind") == "decision"]
    rep = HtmlReport(f"Audit report: {log_path.name}")
    rep.heading("Verification")
    rep.text(report.summary())

    rep.heading("Timeline")
    if decisions:
        fig, ax = plt.subplots(2, 1, figsize=(11, 4.5), sharex=True)
        seqs = [e["seq"] for e in decisions]
        ax[0].bar(seqs, [total_cost(e["body"]) for e in decisions], color="tab:red")
        ax[0].set_ylabel("cost")
        ax[1].bar(seqs, [float((e["body"].get("shield") or {}).get("interventions", intervened(e["body"])))
                         for e in decisions], color="tab:orange")
        ax[1].set_ylabel("shield interventions")
        ax[1].set_xlabel("entry")
        rep.figure(fig, "costs and shield interventions per decision")

    reasons: collections.Counter[str] = collections.Counter()
    for e in decisions:
        for reason, n in ((e["body"].get("shield") or {}).get("by_reason") or {}).items():
            reasons[reason] += n
    rep.heading("Interventions by reason")
    rep.table(["reason", "count"], sorted(reasons.items(), key=lambda kv: -kv[1]) or [["(none)", 0]])

    rep.heading("Decisions")
    frames_dir = log_path.with_name(log_path.name + ".frames")
    rows = []
    flagged = 0
    for e in decisions[:max_decisions]:
        b = e["body"]
        flags = car_flags(b)
        flagged += bool(flags)
        action = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                           for k, v in (b.get("action") or {}).items())
        rows.append(
            f"<tr><td>{e['seq']}</td><td>{html.escape(str(b.get('policy_id', '')))}<br>"
            f"<small>{html.escape(str(b.get('instruction', '')))}</small></td>"
            f"<td style='text-align:left'>{html.escape(str(b.get('thought', '')))}"
            + "".join(f"<br><b style='color:#b00'>FLAG: {html.escape(f)}</b>" for f in flags)
            + f"</td><td style='text-align:left'><small>{html.escape(action)}</small></td>"
            f"<td>{_frame_html(frames_dir, b.get('frame_sha256'))}</td>"
            f"<td>{total_cost(b):.2f}</td></tr>")
    rep.text(f"{len(decisions)} decisions, {flagged} flagged where the thought contradicts the action"
             + (f" (first {max_decisions} shown)" if len(decisions) > max_decisions else ""))
    rep.html("<table><tr><th>entry</th><th>policy / instruction</th><th>chain of thought</th>"
                      "<th>action</th><th>frame</th><th>cost</th></tr>" + "".join(rows) + "</table>")
    return rep.write(Path(out))
