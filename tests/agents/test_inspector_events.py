"""The inspectors-under-events benchmark (benchmarks/inspector_events.py): its rows are the parts the line showed,
scored against the truth, and the events it injects are the ones the twin reports while they last."""

from agents.policies.inspectors import ScriptedInspector
from benchmarks.inspector_events import inspect
from shakedown.demo.line import EVENTS


def test_the_privileged_expert_scores_every_part_right_with_and_without_events():
    calm = inspect(ScriptedInspector(), episodes=1, parts=3, events=[])
    stormy = inspect(ScriptedInspector(), episodes=1, parts=3, events=list(EVENTS))
    for rows in (calm, stormy):
        assert len(rows) == 3 and all(r["correct"] == 1.0 for r in rows)
        assert all(r["decision"] == ("accept" if r["defect"] == "none" else "reject") for r in rows)
    assert not any(r["active_events"] for r in calm)
    # the same seeded parts arrive in the same order whether or not events disturb the line
    assert [r["defect"] for r in calm] == [r["defect"] for r in stormy]
