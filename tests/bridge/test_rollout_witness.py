"""The rollout ladder and the robot witness each other's logs: after each session the ladder co-signs the
robot's audit log and says so in rollout.log; before each session (and after each decision) the robot
co-signs rollout.log. A rollout log cut back or rewritten behind the robot's back is refused by the
robot's next session and shown as tampering by `status`; a robot log rewritten after the ladder saw it
is a fork; a robot record the ladder cannot witness rolls the rung back whatever its gates say."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.robot.gate import AUDIT_KEY, AUDIT_LOG, AUDIT_PUBLIC
from bridge.rollout.gates import PASS
from bridge.rollout.ladder import run_ladder, witness_robot
from bridge.rollout.plan import plan_from_dict
from bridge.rollout.record import (
    KEY_FILE,
    LADDER_WITNESS,
    LOG_FILE,
    PUBLIC_FILE,
    ROBOT_WITNESS,
    WITNESSED,
    RolloutError,
    read_state,
)
from bridge.rollout.session import ROBOT_DIR, emulator_config, run_robot
from safety.audit import keys as audit_keys
from safety.audit.log import AuditLog, iter_entries
from safety.audit.verify import verify
from safety.audit.witness import Witness, WitnessError, witnessed_heads
from shakedown.rollout import main as rollout_main
from tests.bridge.conftest import free_endpoint
from tests.bridge.test_rollout import plan_dict


def reckless_plan() -> dict:
    """Sim passes (it gates nothing the reckless set fails), full rolls it back: two sessions, two decisions."""
    return plan_dict("RECKLESS", band={}, rungs=[
        {"name": "sim", "limits": {"time_s": 2.0}, "gates": [{"metric": "parse_failure_rate", "threshold": 0.0}]},
        {"name": "full", "limits": {"time_s": 2.0}, "gates": [{"metric": "task_error", "threshold": 1.0}]}])


@pytest.fixture(scope="module")
def climbed(tmp_path_factory) -> Path:
    """A real ladder run: sim promoted, full rolled back (read-only: tests that tamper take a copy)."""
    out = tmp_path_factory.mktemp("witnessed") / "rollout"
    state = run_ladder(plan_from_dict(reckless_plan()), out, say=lambda _: None).state
    assert state.status == "rolled-back" and state.rung == "full"
    return out


def copy(out: Path, to: Path) -> Path:
    shutil.copytree(out, to)
    return to


def entries(log: Path) -> list[dict]:
    return list(iter_entries(log))


def head_file(log: Path) -> Path:
    return log.with_name(log.name + ".head.json")


def cut_back(log: Path, size: int) -> None:
    """Keep the first `size` entries (the last a checkpoint) and put that checkpoint back as the signed head: an
    older copy of the log, as a backup would hold it."""
    lines = log.read_bytes().split(b"\n")[:size]
    checkpoint = json.loads(lines[-1])
    assert checkpoint["kind"] == "checkpoint"
    log.write_bytes(b"".join(line + b"\n" for line in lines))
    head_file(log).write_text(json.dumps(checkpoint["body"], indent=1))


def rewrite(log: Path, key_path: Path, at: int, note: str) -> None:
    """Rebuild the log from entry `at` on with that entry's body changed, signed with the log's own key: a
    rewritten history that verifies on its own."""
    old = entries(log)
    lines = log.read_bytes().split(b"\n")[:at]
    log.write_bytes(b"".join(line + b"\n" for line in lines))
    signed = [e["body"] for e in old[:at] if e["kind"] == "checkpoint"]
    if signed:
        head_file(log).write_text(json.dumps(signed[-1], indent=1))
    else:
        head_file(log).unlink()
    with AuditLog(log, audit_keys.load_private(key_path)) as audit:
        for i, entry in enumerate(old[at:], at):
            if entry["kind"] == "checkpoint":
                audit.checkpoint()
            else:
                audit.append(entry["kind"], {**entry["body"], "note": note} if i == at else entry["body"])


def public(path: Path):
    return audit_keys.load_public(path)


# -- a run leaves both witnesses' marks ----------------------------------------------------------------
def test_the_ladder_and_the_robot_cosign_each_others_logs_and_both_verify_against_the_witness(climbed, capsys):
    out = climbed
    rollout_pub = public(out / PUBLIC_FILE)
    rollout_kid = audit_keys.key_id(rollout_pub)
    ladder_kid = Witness(out / LADDER_WITNESS).key_id
    witnessed = [e for e in entries(out / LOG_FILE) if e["kind"] == WITNESSED]
    assert [e["body"]["rung"] for e in witnessed] == ["sim", "full"]
    for entry in witnessed:  # the ladder co-signed each session's robot log, and said so in its own signed log
        body = entry["body"]
        log = out / body["log"]
        assert log.name == AUDIT_LOG and log.parent.name == ROBOT_DIR
        robot_pub = public(log.with_name(AUDIT_PUBLIC))
        assert body["log_key_id"] == audit_keys.key_id(robot_pub) and body["witness_key_id"] == ladder_kid
        (head,) = witnessed_heads(out / LADDER_WITNESS, body["log_key_id"])
        assert (head["tree_size"], head["root"]) == (body["tree_size"], body["root"])
        report = verify(log, robot_pub, witness=out / LADDER_WITNESS)
        assert report.ok and report.witnessed == 1
        # the robot, before it drove, co-signed the ladder's log as it stood then, and noted it in its own log
        (seen,) = [e["body"] for e in entries(log) if e["kind"] == "witnessed"]
        assert seen["log_key_id"] == rollout_kid and seen["tree_size"] < entry["seq"]
    heads = witnessed_heads(out / ROBOT_WITNESS, rollout_kid)
    # before each session and after each decision; the last covers the final rollback and its checkpoint
    assert len(heads) == 4 and [h["tree_size"] for h in heads] == sorted(h["tree_size"] for h in heads)
    assert heads[-1]["tree_size"] == len(entries(out / LOG_FILE)) - 1
    report = verify(out / LOG_FILE, rollout_pub, witness=out / ROBOT_WITNESS)
    assert report.ok and report.witnessed == 4
    assert rollout_main(["status", str(out), "--witness", str(out / ROBOT_WITNESS)]) == 0
    assert "ROLLED BACK at full" in capsys.readouterr().out


# -- the rollout log moved backward or rewritten ------------------------------------------------------
def test_a_rollback_cut_from_the_rollout_log_is_refused_by_the_robot_and_shown_as_tampering(climbed, tmp_path, capsys):
    out = copy(climbed, tmp_path / "rollout")
    log = out / LOG_FILE
    rollback = next(e for e in entries(log) if e["kind"] == "rollout_rollback")
    cut_back(log, rollback["seq"])  # the rollback decision deleted, the head before it restored: re-run full
    assert verify(log, public(out / PUBLIC_FILE)).ok  # on its own the older copy looks like a clean log
    with pytest.raises(RolloutError, match=r"TAMPERING: .*\(rollback\)"):
        read_state(out)
    assert rollout_main(["status", str(out)]) == 2 and "TAMPERING" in capsys.readouterr().err
    said: list[str] = []
    outcome = run_ladder(plan_from_dict(reckless_plan()), out, say=said.append)
    (rung,) = outcome.rungs
    assert rung.robot["session_refused"] and rung.robot["applied"] == 0  # the robot never drove
    assert "the robot refuses the session" in rung.judgement.reason and "cut back or rewritten" in rung.judgement.reason
    decision = entries(log)[-2]
    assert decision["kind"] == "rollout_rollback" and decision["body"]["reason"] == rung.judgement.reason
    refused = [e for e in entries(rung.folder / ROBOT_DIR / AUDIT_LOG) if e["kind"] == "session_refused"]
    assert len(refused) == 1 and "cut back or rewritten" in refused[0]["body"]["reason"]
    assert any("did not acknowledge" in line for line in said)  # nor does it co-sign the decision taken on it
    with pytest.raises(RolloutError, match="TAMPERING"):  # the ladder appended to the cut log: still not the robot's
        read_state(out)


def test_a_robot_in_its_own_process_refuses_a_rollout_log_cut_back(climbed, tmp_path):
    out = copy(climbed, tmp_path / "rollout")
    cut_back(out / LOG_FILE, next(e for e in entries(out / LOG_FILE) if e["kind"] == "rollout_promote")["seq"])
    plan = plan_from_dict(reckless_plan())
    cfg = emulator_config(plan, plan.rung("full"), free_endpoint(), tmp_path / "session" / ROBOT_DIR, out)
    result = run_robot(cfg, "subprocess")  # the paths travel in its config file
    assert "the robot refuses the session" in result["session_refused"] and result["applied"] == 0
    assert result["reason"] == result["session_refused"] and not result["periods"]["t"]
    assert [e["kind"] for e in entries(cfg.out / AUDIT_LOG)] == ["session_refused", "checkpoint"]


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_any_rewrite_or_cut_of_the_history_the_robot_saw_is_refused_by_it(climbed, data):
    log = climbed / LOG_FILE
    old = entries(log)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for name in (LOG_FILE, LOG_FILE + ".head.json", PUBLIC_FILE, KEY_FILE):
            shutil.copy(climbed / name, out / name)
        shutil.copytree(climbed / ROBOT_WITNESS, out / ROBOT_WITNESS)
        if data.draw(st.booleans(), "cut"):
            size = data.draw(st.sampled_from([e["seq"] + 1 for e in old[:-1] if e["kind"] == "checkpoint"]), "size")
            cut_back(out / LOG_FILE, size)
        else:
            at = data.draw(st.sampled_from([e["seq"] for e in old if e["kind"] != "checkpoint"]), "entry")
            rewrite(out / LOG_FILE, out / KEY_FILE, at, data.draw(st.text(max_size=12), "note"))
        assert verify(out / LOG_FILE, public(out / PUBLIC_FILE)).ok  # signed with the ladder's own key
        with pytest.raises(RolloutError, match="TAMPERING"):
            read_state(out)
        with pytest.raises(WitnessError, match="cut back or rewritten"):
            Witness(out / ROBOT_WITNESS).cosign(out / LOG_FILE, public(out / PUBLIC_FILE))


# -- the robot's log -----------------------------------------------------------------------------------
def test_a_robot_log_rewritten_after_the_ladder_witnessed_it_is_a_fork(climbed, tmp_path):
    out = copy(climbed, tmp_path / "rollout")
    robot = out / "rungs" / "sim-1" / ROBOT_DIR
    log, robot_pub = robot / AUDIT_LOG, public(robot / AUDIT_PUBLIC)
    rewrite(log, robot / AUDIT_KEY, 1, "this never happened")  # with the robot's own key
    assert verify(log, robot_pub).ok
    report = verify(log, robot_pub, witness=out / LADDER_WITNESS)
    assert not report.ok and "(fork)" in report.problem.reason
    with pytest.raises(RolloutError, match="cannot be trusted: .* cut back or rewritten"):
        witness_robot(out, robot.parent)
    full = out / "rungs" / "full-1" / ROBOT_DIR / AUDIT_LOG  # an edit without the key: the log does not verify
    full.write_text(full.read_text().replace('"armed"', '"armd"', 1))
    with pytest.raises(RolloutError, match="cannot be trusted: .* FAILED at line"):
        witness_robot(out, full.parents[1])


def test_a_robot_record_the_ladder_cannot_witness_rolls_the_rung_back_whatever_the_gates_say(tmp_path):
    plan = plan_dict(band={}, rungs=[{"name": "full", "limits": {"time_s": 1.0},
                                      "gates": [{"metric": "stops", "threshold": 0}]}])
    out = tmp_path / "rollout"
    store = Witness(out / LADDER_WITNESS).store
    (store / "heads.jsonl").write_text('{"not": "a co-signed head"}\n')  # the ladder's witness store is damaged
    outcome = run_ladder(plan_from_dict(plan), out, say=lambda _: None)
    (rung,) = outcome.rungs
    assert outcome.state.status == "rolled-back" and outcome.state.rung == "full"
    assert [g.verdict for g in rung.judgement.gates] == [PASS]  # the gates alone would have promoted it
    decision = outcome.state.decisions[-1]
    assert decision.reason.startswith("the robot's record cannot be trusted") and "(the gates alone: promote)" in \
        decision.reason and "not a valid co-signed head" in decision.reason
    assert not [e for e in entries(out / LOG_FILE) if e["kind"] == WITNESSED]
    assert read_state(out) == outcome.state  # the robot saw (and co-signed) the rollback: the log is whole
