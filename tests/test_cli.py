"""The `shakedown` command: the demo writes its report; bad input exits cleanly with a message."""

import json
import re

import pytest

from shakedown.cli import main

SMALL = ["--episodes", "1", "--duration", "2", "--stress-episodes", "1", "--study.budget", "8", "--study.per-stage", "20",
         "--study.final", "20", "--record-s", "6", "--rung-s", "2", "--fault-s", "5"]
"""The whole car demo at its smallest: every part runs for real (emulator processes, ZeroMQ, the ladder, pytest)."""


def test_the_demo_runs_every_part_and_its_report_links_what_it_wrote(tmp_path, capsys):
    assert main(["demo", "--no-vlm", *SMALL, "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    parts = json.loads((run_dir / "results.json").read_text())["parts"]
    assert list(parts) == ["drive", "scenarios", "robot", "audit"]
    assert [s["category"] for s in parts["drive"]["summary"]] == ["centerline", "velocity", "reverse", "smooth"]
    # 2: the search finds the unshielded car hitting the box; the shield prevents every one of those failures
    scen = parts["scenarios"]
    assert scen["search"]["failures"] > 0
    assert scen["shield_on_replay"] == {"episodes": scen["search"]["failures"], "failed": 0}
    assert 0 <= scen["estimate"]["ci_low"] <= scen["estimate"]["p"] <= scen["estimate"]["ci_high"] < 0.5
    assert scen["regressions"]["passed"] and len(scen["regressions"]["cases"]) == 2
    # 3: the twin calibrated, the candidate (here the scripted expert) promoted rung by rung, the link fault
    # stopped the car and the session went on
    robot = parts["robot"]
    assert robot["calibration"]["ade_after"] < robot["calibration"]["ade_before"]
    assert robot["ladder"]["status"] == "complete"
    assert [r["rung"] for r in robot["ladder"]["rungs"]] == ["sim", "shadow", "guarded", "canary", "full"]
    assert len(robot["link_fault"]["safe_stops"]) >= 1 and robot["link_fault"]["resumed"]
    # 4: every log verified, co-signed, verified against the witness and indexed
    audit = parts["audit"]
    assert audit["all_verified"] and len(audit["logs"]) >= 9
    assert sum(c["decisions"] for c in audit["flags"].values()) > 0
    page = (run_dir / "report.html").read_text()
    for title in ("1. Twin, agent and shield", "2. A rare event", "3. The bridge", "4. The audit"):
        assert title in page
    links = re.findall(r'href="([^"]+)"', page)
    assert len(links) >= 4 and all((run_dir / link).is_file() for link in links)
    out = capsys.readouterr().out
    assert "shakedown scenario replay car/box-after-bend" in out and "shakedown audit verify" in out


def test_the_demo_report_and_results_of_one_part(tmp_path, capsys):
    assert main(["demo", "--only", "drive", "--episodes", "1", "--duration", "2", "--stress-episodes", "1",
                 "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    parts = json.loads((run_dir / "results.json").read_text())["parts"]
    assert list(parts) == ["drive"]
    assert all(s["episodes"] == 1 for s in parts["drive"]["summary"])
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64") == 4  # one figure per category, the VLM's drive and thought in it
    assert "chain of thought" in page
    assert "adaptability" in capsys.readouterr().out


def test_demo_parts_are_checked(capsys):
    assert main(["demo", "--only", "drive", "rocket"]) == 2
    assert "DemoConfig.only ('drive', 'rocket'): choose one or more of drive, scenarios, robot, audit" in \
        " ".join(capsys.readouterr().err.replace("│", " ").split())


def test_unknown_track_is_a_clear_error(capsys):
    assert main(["demo", "--track", "moon"]) == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert "unknown track 'moon'; choose one of" in err


def test_every_command_documents_its_flags_from_the_config(capsys):
    """--help after a command lists each config field with its docstring and default (tyro)."""
    cases = {("demo", "--help"): ("Simulated seconds per drive in part 1.", "(default: 8.0)"),
             ("demo", "--world", "factory", "--help"): ("Parts inspected per episode.", "(default: 8)"),
             ("eval", "--help"): ("Factory: parts per episode.", "(default: 8)"),
             ("train", "car", "--stage", "grpo", "--help"): ("Weight of the KL penalty", "(default: 0.04)"),
             ("train", "factory", "--stage", "ppo", "--help"): ("PPO ratio clip", "(default: 0.1)")}
    for argv, expected in cases.items():
        assert main(list(argv)) == 0
        shown = " ".join(capsys.readouterr().out.replace("│", " ").split())
        for text in expected:
            assert text in shown, (argv, text)


def test_a_bad_flag_value_is_refused_with_the_field_named(capsys):
    assert main(["train", "car", "--stage", "grpo", "--group", "1"]) == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert "GRPOArgs.group = 1 is outside its valid range [2.0, 256.0]" in err


def test_audit_commands_on_the_demo_log(tmp_path, capsys):
    assert main(["demo", "--only", "drive", "--episodes", "1", "--duration", "1", "--stress-episodes", "1", "--no-vlm",
                 "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    log, key = run_dir / "audit.log", run_dir / "audit-key.pub"
    capsys.readouterr()
    assert main(["audit", "verify", str(log), "--key", str(key), "--prove", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK:") and "VERIFIED" in out
    assert main(["audit", "search", str(log), "--policy", "scripted", "--json"]) == 0
    hits = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert len(hits) == 4 and all(h["body"]["policy_id"].startswith("scripted") for h in hits)
    assert main(["audit", "report", str(log), "--key", str(key), "-o", str(tmp_path / "r.html")]) == 0
    assert "chain of thought" in (tmp_path / "r.html").read_text()
    data = bytearray(log.read_bytes())
    data[200] ^= 1
    log.write_bytes(bytes(data))
    assert main(["audit", "verify", str(log), "--key", str(key)]) == 1
    assert "FAILED at line 1" in capsys.readouterr().out


def test_factory_demo_writes_report_and_verified_log(tmp_path, capsys):
    assert main(["demo", "--world", "factory", "--only", "line", "audit", "--episodes", "1", "--parts", "2",
                 "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    parts = json.loads((run_dir / "results.json").read_text())["parts"]
    # the shipped VLM inspector between the heuristic and the expert, its thoughts shown part by part
    heuristic, vlm, expert = parts["line"]["results"]
    assert (heuristic["policy"], expert["policy"]) == ("heuristic-inspector-v1", "scripted-inspector-v1")
    assert vlm["policy"].startswith("vlm:") and len(vlm["thoughts"]) == 2
    assert parts["audit"]["all_verified"]
    page = (run_dir / "report.html").read_text()
    assert "good (top) and defective (bottom)" in page and page.count("data:image/png;base64") == 4
    assert "its thought on each part of the first episode" in page and vlm["thoughts"][0]["thought"][:40] in page


@pytest.mark.slow
def test_the_factory_demo_searches_estimates_and_keeps_the_person_in_the_cell(tmp_path):
    assert main(["demo", "--world", "factory", "--episodes", "1", "--parts", "2", "--study.budget", "6",
                 "--study.per-stage", "10", "--study.max-stages", "1", "--study.final", "10", "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    parts = json.loads((run_dir / "results.json").read_text())["parts"]
    assert list(parts) == ["line", "scenarios", "audit"]
    scen = parts["scenarios"]
    assert scen["scenario"] == "factory-person-enters-during-jam"
    assert scen["search"]["failures"] > 0 and scen["shield_on_replay"]["failed"] == 0  # the shield keeps the distance
    assert scen["estimate"]["method"] == "CE-IS" and scen["regressions"]["passed"]
    assert parts["audit"]["all_verified"]


def test_eval_counts_failed_parses_as_failures(tmp_path, capsys):
    assert main(["eval", "car", "--episodes", "1", "--max-new-tokens", "4", "--unconstrained", "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    zero = [r for r in results["rows"] if r["policy"].startswith("zero-shot")]
    assert len(zero) == 4  # one episode per category
    # Decoded freely, four new tokens cannot hold a JSON answer: every one is a failed parse, scored -1, not dropped
    # (under the answer grammar, the default, the answer would be closed with defaults and parse).
    assert all(r["parse_failed"] and r["improvement"] == -1.0 for r in zero)
    expert = [r for r in results["rows"] if r["policy"] == "scripted-expert-v1"]
    assert all(r["improvement"] > 0 for r in expert)
    out = capsys.readouterr().out
    assert "adaptability" in out and "1 episode per category" in out  # the table says what it rests on


def test_eval_keeps_its_episodes_when_the_summary_fails(tmp_path, monkeypatch):
    """The decisions are written before anything is summarised: a summary that raises loses no episode."""
    import shakedown.eval as eval_cli

    def broken(*_args):
        raise RuntimeError("summary broke")

    monkeypatch.setattr(eval_cli, "summary_table", broken)
    with pytest.raises(RuntimeError, match="summary broke"):
        main(["eval", "factory", "--episodes", "1", "--parts", "2", "--no-zero-shot", "--out", str(tmp_path)])
    (run_dir,) = tmp_path.iterdir()
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    assert {r["policy"] for r in rows} == {"heuristic (colour statistics)", "expert (privileged)"}
    assert len(rows) == 4 and all(r["decision"] in ("accept", "reject", "hold") for r in rows)
