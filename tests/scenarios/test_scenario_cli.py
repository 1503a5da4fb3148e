"""`shakedown scenario ...` end to end on small budgets (inline: one process)."""

import json

from shakedown.cli import main

SCENARIO = "car/friction-drop-before-corner"


def test_list_show_and_a_bad_file(capsys, tmp_path):
    assert main(["scenario", "list"]) == 0
    assert "car/box-after-bend" in capsys.readouterr().out
    assert main(["scenario", "show", SCENARIO]) == 0
    out = capsys.readouterr().out
    assert "event:spill.scale" in out and "signals:" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nworld: {kind: car}\nmonitors: {m: 'always(speeed > 0)'}\n")
    assert main(["scenario", "run", str(bad), "-n", "2", "--backend", "inline"]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:3: monitors.m" in err and "unknown signal" in err


def test_search_shrink_replay_export_and_report(capsys, tmp_path):
    out = tmp_path / "study"
    assert main(["scenario", "search", SCENARIO, "--method", "cross_entropy", "--budget", "8", "--batch", "4",
                 "--backend", "inline", "--out", str(out)]) == 0
    study = json.loads((out / "search-cross_entropy-0.json").read_text())
    assert len(study["episodes"]) == 8 and study["dims"][2] == "event:spill.scale"
    capsys.readouterr()
    assert main(["scenario", "replay", SCENARIO, "--from-study", str(out / "search-cross_entropy-0.json"),
                 "--index", "3"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["robustness"] == study["episodes"][3]["robustness"]
    # A failing case: the patch leaves 30 % grip.
    z = ",".join(["0"] * 2 + ["-5"] + ["0"] * 4)
    assert main(["scenario", "shrink", SCENARIO, f"--z={z}", "--seed", "0", "--out", str(out)]) == 0
    shrunk = capsys.readouterr().out
    assert "event:spill.scale" in shrunk and "replay: shakedown scenario replay" in shrunk
    assert main(["scenario", "estimate", SCENARIO, "--method", "mc", "-n", "4", "--backend", "inline",
                 "--out", str(out)]) == 0
    assert "p = " in capsys.readouterr().out
    assert main(["scenario", "report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "search cross_entropy" in page and "<img" in page


def test_export_writes_cases_that_replay_identically(capsys, tmp_path):
    from pathlib import Path

    from scenarios.export import load_case, replay

    slick = tmp_path / "slick.yaml"
    slick.write_text(Path("scenarios/library/car/friction-drop-before-corner.yaml").read_text()
                     .replace("mean: 0.8, std: 0.1", "mean: 0.25, std: 0.02"))
    assert main(["scenario", "run", str(slick), "-n", "3", "--backend", "inline", "--out", str(tmp_path / "s")]) == 0
    assert "3 failures" in capsys.readouterr().out
    assert main(["scenario", "export", str(slick), str(tmp_path / "s" / "run-0.json"), "--out", str(tmp_path / "corpus"),
                 "--top", "2"]) == 0
    cases = sorted((tmp_path / "corpus" / "cases").glob("*.json"))
    assert len(cases) == 2 and (tmp_path / "corpus" / "test_scenario_regressions.py").exists()
    result, identical = replay(load_case(cases[0]))
    assert identical and result.failed
    assert main(["scenario", "replay", "--case", str(cases[0]), str(slick)]) == 0


def test_a_killed_scenario_run_resumes_without_repeating_or_losing_an_episode(tmp_path):
    """kill -9 of `shakedown scenario run` mid-campaign, then the same command again."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "shakedown.cli", "scenario", "run", SCENARIO, "-n", "24", "--workers", "2",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db = out / "campaign.db"

    def stored() -> list[tuple]:
        if not db.exists():
            return []
        with sqlite3.connect(db) as c:
            try:
                return c.execute("select idx, result, finished from episodes order by idx").fetchall()
            except sqlite3.OperationalError:
                return []

    deadline = time.monotonic() + 240
    while len(stored()) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = stored()
    assert 4 <= len(before) < 24, "the kill must land mid-campaign"
    assert main(["scenario", "run", SCENARIO, "-n", "24", "--workers", "2", "--out", str(out)]) == 0
    after = stored()
    assert [row[0] for row in after] == list(range(24))  # every episode exactly once
    assert set(before) <= set(after)  # every row stored before the kill is unchanged (result and timestamp)
