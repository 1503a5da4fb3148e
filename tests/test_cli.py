"""The `shakedown` command: the demo writes its report; bad input exits cleanly with a message."""

import json

from shakedown.cli import main


def test_demo_writes_report_and_results(tmp_path, capsys):
    assert main(["demo", "--episodes", "1", "--duration", "2", "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert [s["category"] for s in results["summary"]] == ["centerline", "velocity", "reverse", "smooth"]
    assert all(s["episodes"] == 1 for s in results["summary"])
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64") == 4  # one figure per category
    assert "adaptability" in capsys.readouterr().out


def test_unknown_track_is_a_clear_error(capsys):
    assert main(["demo", "--track", "moon"]) == 2
    assert "unknown track 'moon'" in capsys.readouterr().err
