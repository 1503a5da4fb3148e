"""Audits across runs: verified logs in one SQLite database, searched and summarised together;
a log that does not verify is recorded and none of its entries are loaded."""

import json

from safety.audit.index import index_logs, query, rates
from safety.audit.keys import generate
from safety.audit.log import AuditLog
from shakedown.cli import main


def _run(folder, policy: str, n: int, intervene_every: int, thought: str) -> None:
    key = generate(folder / "audit-key.pem", folder / "audit-key.pub")
    with AuditLog(folder / "audit.log", key) as log:
        for i in range(n):
            log.append("decision", {"policy_id": policy, "thought": thought, "action": {"v_max": 6.0},
                                    "shield": {"interventions": int(i % intervene_every == 0)},
                                    "costs": {"speed": float(i % 2)}, "context": {"robot": f"robot-{policy}"}})


def test_index_search_and_rates_across_runs(tmp_path, capsys):
    runs = [tmp_path / name for name in ("a", "b", "c")]
    for run in runs:
        run.mkdir()
    _run(runs[0], "vlm-1", 10, 2, "slow down for the corner")
    _run(runs[1], "expert", 8, 4, "hold the line")
    _run(runs[2], "vlm-1", 6, 3, "slow down")
    tampered = runs[2] / "audit.log"
    data = bytearray(tampered.read_bytes())
    data[100] ^= 1
    tampered.write_bytes(bytes(data))
    db = tmp_path / "audits.db"
    results = index_logs(db, [r / "audit.log" for r in runs],
                         flagger=lambda body: ["slow?"] if "slow" in body["thought"] and body["action"]["v_max"] > 5 else [])
    assert [r["ok"] for r in results] == [True, True, False]
    assert "FAILED" in results[2]["summary"]
    hits = query(db, policy="vlm")
    assert len(hits) == 10 and {h["log"] for h in hits} == {str((runs[0] / "audit.log").resolve())}
    assert len(query(db, interventions=True)) == 5 + 2
    assert len(query(db, thought="HOLD")) == 8
    by_policy = {r["policy"]: r for r in rates(db, "policy")}
    assert by_policy["vlm-1"]["decisions"] == 10 and by_policy["vlm-1"]["intervention_rate"] == 0.5
    assert by_policy["vlm-1"]["contradiction_rate"] == 1.0 and by_policy["expert"]["contradiction_rate"] == 0.0
    # Re-indexing replaces rows instead of doubling them.
    index_logs(db, [runs[0] / "audit.log"])
    assert rates(db, "policy")[0]["decisions"] + rates(db, "policy")[1]["decisions"] == 18
    # The command line: index (exit 1 because one log failed), search the database, rates by robot.
    assert main(["audit", "index", str(tmp_path / "cli.db"), *(str(r / "audit.log") for r in runs)]) == 1
    assert "NOT INDEXED" in capsys.readouterr().out
    assert main(["audit", "search", str(tmp_path / "cli.db"), "--policy", "expert", "--json"]) == 0
    assert len([json.loads(line) for line in capsys.readouterr().out.splitlines()]) == 8
    assert main(["audit", "rates", str(tmp_path / "cli.db"), "--by", "robot"]) == 0
    assert "robot-expert" in capsys.readouterr().out
