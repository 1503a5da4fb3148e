"""Staged rollouts on the emulator over loopback ZeroMQ: a good candidate climbs to full with every
decision signed, a reckless one is rolled back at the first rung whose gate measures it, too little
data pauses the ladder for an operator, a metric that cannot be measured fails its gate, the state
comes back from the signed log alone, and bad plans are refused naming the field before anything runs."""

import copy
import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.control.mpc_params import PARAM_TABLE, MPCParams
from agents.policies.car_expert import FixedParamsPolicy
from bridge.rollout.gates import FAIL, INCONCLUSIVE, PASS, evaluate_gate, judge
from bridge.rollout.ladder import operator_decision, run_ladder
from bridge.rollout.metrics import APPLIED, METRICS, RungData, empty_decisions, measure, param_distance
from bridge.rollout.plan import ADAPTER_MANIFEST, Gate, PlanError, load_plan, plan_from_dict
from bridge.rollout.record import LOG_FILE, PUBLIC_FILE, RolloutError, read_state
from bridge.rollout.watch import WatchedCandidate, ask_operator
from safety.audit import keys as audit_keys
from safety.audit.log import iter_entries
from safety.audit.verify import prove, verify, verify_proof
from safety.car.spec import CarSafetySpec
from scenarios.study import StudyResult
from shakedown.rollout import main as rollout_main
from tests.bridge.conftest import ROOT
from twin.core.contracts import Observation

GOOD = FixedParamsPolicy(MPCParams(qv=60.0, v_min=1.98, v_max=2.02), policy_id="tuned-2ms", label="tuned for 2 m/s")
"""Holds the 2 m/s the instruction asks for."""
RECKLESS = FixedParamsPolicy(MPCParams(qv=60.0, v_min=5.0, v_max=6.0, track_safety_margin=0.0), policy_id="reckless",
                             label="reckless")
"""Asks for 5-6 m/s where the instruction says 2, hugging the walls: worse than the default parameters."""


class Raising:
    """A candidate that crashes on every observation (nothing of it can be measured)."""

    policy_id = "raising"

    def decide(self, observation):
        raise RuntimeError("the model crashed")


RUNG_S = 2.0
SCENARIO = "name: car-tuned\nworld: {kind: car, track: oval, duration_s: 6}\nsystem: {policy: %s}\n"


def ref(name: str) -> str:
    return f"python:tests.bridge.test_rollout:{name}"


def plan_dict(candidate: str = "GOOD", **changes) -> dict:
    """Gates a good candidate passes and the reckless one fails, one on each rung that can tell them apart."""
    plan = {
        "name": "test", "instruction": "Drive at 2 m/s.", "track": "oval", "candidate": ref(candidate),
        "incumbent": "default",
        "robot": {"gap": {"mu_scale": 0.9, "motor_gain": 0.9, "extra_delay_s": 0.02}, "decide_every_s": 0.5,
                  "max_wait_s": 3},
        "rungs": [
            {"name": "sim", "limits": {"time_s": RUNG_S}, "gates": [{"metric": "task_error", "threshold": 1.0}]},
            {"name": "shadow", "limits": {"time_s": RUNG_S},
             "gates": [{"metric": "would_be_interventions_per_min", "threshold": 700},
                       {"metric": "parse_failure_rate", "threshold": 0.0}]},
            {"name": "guarded", "envelope": {"v_max": 2.5, "clearance": 0.08}, "confirm": "auto-approve",
             "limits": {"time_s": RUNG_S}, "gates": [{"metric": "interventions_per_min", "threshold": 300},
                                                     {"metric": "task_error", "threshold": 1.0}]},
            {"name": "canary", "limits": {"time_s": RUNG_S, "distance_m": 50},
             "gates": [{"metric": "task_error", "threshold": 0.0, "relative_to": "incumbent"},
                       {"metric": "stops", "threshold": 0}]},
            {"name": "full", "limits": {"time_s": RUNG_S},
             "gates": [{"metric": "task_error", "threshold": 1.0}, {"metric": "constraint_cost", "threshold": 0.05}]},
        ],
        "band": {"task_error": 0.5},
    }
    plan.update(changes)
    return plan


def evidence(tmp_path, candidate: str, kind: str = "run", failed: int = 0):
    """A scenario campaign's results about `candidate`, as `shakedown scenario run` saves them."""
    episodes = [{"index": i, "z": [], "seed": i, "robustness": -0.1 if i < failed else 0.4, "failed": i < failed,
                 "valid": True, "signature": None, "loglik": 0.0, "monitors": {}, "error": None, "shield": 0}
                for i in range(20)]
    return StudyResult("car-tuned", kind, "nominal", 0, (), episodes, text=SCENARIO % candidate).save(
        tmp_path / f"study-{kind}.json")


def write_plan(tmp_path, plan: dict):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


# -- the whole ladder ------------------------------------------------------------------------------
def test_a_good_candidate_reaches_full_with_every_decision_signed(tmp_path, capsys):
    plan = plan_dict()
    plan["rungs"][0]["evidence"] = str(evidence(tmp_path, ref("GOOD")))
    plan["rungs"][0]["gates"].append({"metric": "scenario_failure_rate", "threshold": 0.1})
    out = tmp_path / "rollout"
    assert rollout_main(["run", str(write_plan(tmp_path, plan)), "--out", str(out)]) == 0
    state = read_state(out)
    assert state.status == "complete" and state.driving == "python:tests.bridge.test_rollout:GOOD"
    assert [(d.rung, d.action, d.by) for d in state.decisions] == \
        [(r, "promote", "gates") for r in ("sim", "shadow", "guarded", "canary", "full")]
    public = audit_keys.load_public(out / PUBLIC_FILE)
    assert verify(out / LOG_FILE, public).ok
    entries = list(iter_entries(out / LOG_FILE))
    for d in state.decisions:  # signed the moment it was taken: the next entry is the checkpoint covering it
        assert entries[d.seq + 1]["kind"] == "checkpoint" and entries[d.seq + 1]["body"]["tree_size"] == d.seq + 1
        assert verify_proof(prove(out / LOG_FILE, d.seq), public)
        assert d.evidence["plan_hash"] == state.plan_hash and all(g["verdict"] == PASS for g in d.evidence["gates"])
    plan_read = load_plan(tmp_path / "plan.yaml")
    for d in state.decisions:  # the signed verdicts follow from the saved data: anyone can judge it again
        raw = (out / d.evidence["result_file"]).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == d.evidence["result_sha256"]
        data = RungData.from_json(json.loads(raw)["data"])
        again = judge(plan_read.rung(d.rung), data, plan_read.band if d.rung in APPLIED else (), state.sim_metrics,
                      state.incumbent_metrics)
        assert [g.as_dict() for g in (*again.gates, *again.band)] == d.evidence["gates"] + d.evidence["band"]
    by_rung = {d.rung: d.evidence for d in state.decisions}
    assert by_rung["sim"]["metrics"]["scenario_failure_rate"] == 0.0
    assert by_rung["shadow"]["metrics"]["fde"] > 0.1  # the candidate disagrees with the incumbent, measurably
    relative = by_rung["canary"]["gates"][0]  # no worse than the incumbent drove in shadow
    assert relative["reference"] == by_rung["shadow"]["robot"]["incumbent_metrics"]["task_error"] > relative["value"]
    for rung in ("guarded", "canary", "full"):
        (band,) = by_rung[rung]["band"]
        assert band["verdict"] == PASS and band["reference"] == by_rung["sim"]["metrics"]["task_error"]
        assert by_rung[rung]["robot"]["gap"]["motor_gain"] == 0.9  # the real rungs ran with the declared gap
    report = (out / "report.html").read_text()
    assert "COMPLETE" in report and report.count("<img") >= 6
    shadow_log = next((out / "rungs").glob("shadow-*/shadow.log"))  # the candidate's shadow decisions, never applied
    shadow = [e for e in iter_entries(shadow_log) if e["kind"] == "shadow_decision"]
    assert shadow and all(e["body"]["context"]["applied"] is False for e in shadow)
    assert verify(shadow_log, public).ok
    assert rollout_main(["status", str(out)]) == 0 and "COMPLETE" in capsys.readouterr().out
    with pytest.raises(RolloutError, match="complete"):  # nothing left to run
        run_ladder(load_plan(tmp_path / "plan.yaml"), out, say=lambda _: None)


@pytest.mark.parametrize("first", ["sim", "shadow", "guarded"])
def test_a_reckless_candidate_is_rolled_back_at_the_first_rung_whose_gate_measures_it(tmp_path, first):
    plan = plan_dict("RECKLESS")
    for rung in plan["rungs"][:["sim", "shadow", "guarded"].index(first)]:  # earlier rungs gate what cannot tell
        rung["gates"] = [{"metric": "parse_failure_rate", "threshold": 0.0}]
    outcome = run_ladder(plan_from_dict(plan), tmp_path / "rollout", say=lambda _: None)
    state = outcome.state
    assert state.status == "rolled-back" and state.rung == first and state.driving == "default"
    assert [d.action for d in state.decisions] == ["promote"] * (len(state.decisions) - 1) + ["rollback"]
    last = state.decisions[-1]
    assert last.by == "gates" and any(g["verdict"] == FAIL for g in last.evidence["gates"])
    assert read_state(tmp_path / "rollout") == state


def test_too_little_data_pauses_for_an_operator_and_denied_decisions_never_drive(tmp_path):
    plan = plan_dict("RECKLESS", rungs=[
        {"name": "guarded", "envelope": {"v_max": 2.5}, "confirm": "auto-deny", "limits": {"time_s": RUNG_S},
         "gates": [{"metric": "task_error", "threshold": 1.0, "window_s": 10.0}]},
        {"name": "full", "gates": [{"metric": "task_error", "threshold": 1.0}]}], band={})
    out = tmp_path / "rollout"
    outcome = run_ladder(plan_from_dict(plan), out, say=lambda _: None)
    (rung,) = outcome.rungs
    assert outcome.state.status == "paused" and outcome.state.rung == "guarded"
    (gate,) = rung.judgement.gates
    assert gate.verdict == INCONCLUSIVE and "window is not filled" in gate.reason
    assert rung.metrics["denied_rate"] == 1.0 and rung.metrics["flagged_rate"] == 1.0
    assert rung.metrics["interventions_per_min"] > 300  # the incumbent's default parameters drove instead
    confirmations = [e for e in iter_entries(out / LOG_FILE) if e["kind"] == "rollout_confirmation"]
    assert len(confirmations) == 1 and confirmations[0]["body"]["approved"] is False
    with pytest.raises(RolloutError, match="paused"):
        run_ladder(plan_from_dict(plan), out, say=lambda _: None)
    state = operator_decision(out, "promote", "10 s of the gate's window is more than the track allows", "alice")
    assert state.status == "running" and state.rung == "full" and state.decisions[-1].by == "operator:alice"
    state = operator_decision(out, "rollback", "withdrawn pending a longer guarded run", "bob")
    assert state.status == "rolled-back" and read_state(out) == state


def test_a_metric_that_could_not_be_measured_fails_its_gate(tmp_path):
    plan = plan_dict("Raising", rungs=[
        {"name": "shadow", "limits": {"time_s": RUNG_S}, "gates": [{"metric": "fde", "threshold": 100.0}]},
        {"name": "full", "gates": [{"metric": "task_error", "threshold": 1.0}]}], band={})
    outcome = run_ladder(plan_from_dict(plan), tmp_path / "rollout", say=lambda _: None)
    assert outcome.state.status == "rolled-back" and outcome.state.rung == "shadow"
    (gate,) = outcome.rungs[0].judgement.gates
    assert gate.verdict == FAIL and gate.value is None and "could not be measured" in gate.reason
    assert outcome.rungs[0].metrics["parse_failure_rate"] == 1.0
    assert outcome.rungs[0].robot["incumbent_metrics"]["task_error"] is not None  # the incumbent drove meanwhile


def test_a_subprocess_robot_keeps_the_rungs_distance_limit(tmp_path):
    plan = plan_dict(robot={"process": "subprocess", "decide_every_s": 0.5, "max_wait_s": 5}, band={}, rungs=[
        {"name": "full", "limits": {"time_s": 3.0, "distance_m": 2.0}, "envelope": {"zones": [
            {"s_start": 0.0, "s_end": 30.0, "v_max": 1.5}]},
         "gates": [{"metric": "cost_speed", "threshold": 0.0}, {"metric": "task_error", "threshold": 2.0}]}])
    outcome = run_ladder(plan_from_dict(plan), tmp_path / "rollout", say=lambda _: None)
    (rung,) = outcome.rungs
    assert "distance limit of 2.0 m" in rung.robot["limit"]["reason"]
    assert rung.data.span_s < 3.0 and rung.data.periods["v"].max() <= 1.5 + 0.05  # the zone held on the robot
    assert outcome.state.status == "complete"


# -- the record ----------------------------------------------------------------------------------
def test_status_is_rebuilt_from_the_log_alone_and_a_tampered_log_is_refused(tmp_path):
    plan = plan_dict(rungs=[{"name": "full", "limits": {"time_s": 1.0}, "gates": [{"metric": "stops", "threshold": 0}]}],
                     band={})
    out = tmp_path / "rollout"
    state = run_ladder(plan_from_dict(plan), out, say=lambda _: None).state
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in (LOG_FILE, LOG_FILE + ".head.json", PUBLIC_FILE):
        shutil.copy(out / name, alone / name)
    assert read_state(alone) == state and state.status == "complete"
    calibration = tmp_path / "calibrated.yaml"  # the shape `shakedown calibrate` writes
    calibration.write_text(yaml.safe_dump({
        "params": {"vehicle.mu": 0.89}, "uncertainty": {"vehicle.mu": 0.03}, "nominal": {"vehicle.mu": 1.0,
                                                                                         "vehicle.mass": 3.5},
        "unidentifiable": {"vehicle.mass": "the log is too flat"},
        "heldout": {"segments": 4, "ade_before_m": 0.4, "ade_after_m": 0.1, "fde_before_m": 0.9, "fde_after_m": 0.2}}))
    assert rollout_main(["report", str(out), "--calibration", str(calibration)]) == 0
    page = (out / "report.html").read_text()
    assert "Calibration of the twin" in page and "unidentifiable: the log is too flat" in page
    log = (out / LOG_FILE).read_text().replace('"action":"promote"', '"action":"pause"', 1)
    (alone / LOG_FILE).write_text(log)
    with pytest.raises(RolloutError, match="does not verify"):
        read_state(alone)
    with pytest.raises(RolloutError, match="does not verify"):
        operator_decision(alone, "rollback", "tampered")


# -- bad plans -------------------------------------------------------------------------------------
def _set(path: str, value):
    def change(plan: dict) -> None:
        *parents, leaf = path.split(".")
        node = plan
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is KeyError:
            del node[leaf]
        else:
            node[leaf] = value
    return change


def _swap(plan: dict) -> None:
    plan["rungs"][1], plan["rungs"][2] = plan["rungs"][2], plan["rungs"][1]


@pytest.mark.parametrize("change, message", [
    (_set("rungs.0.gates.0.metric", "speediness"), r"rungs\[0\] \(sim\)\.gates\[0\]\.metric: unknown metric 'speediness'"),
    (_set("rungs.2.gates.0.threshold", KeyError), r"rungs\[2\] \(guarded\)\.gates\[0\]\.threshold: .* has no threshold"),
    (_swap, r"rungs\[2\] \(shadow\): rung 'shadow' is out of order"),
    (_set("rungs.2.gates.0.metric", "fde"), r"rungs\[2\] \(guarded\)\.gates\[0\]\.metric: 'fde' cannot be measured on "
                                            "the guarded rung"),
    (_set("rungs.2.envelope", {"v_max": 9.0}), r"rungs\[2\] \(guarded\)\.envelope\.v_max = 9.0 loosens"),
    (_set("rungs.2.envelope", {"wheelbase": 0.5}), r"rungs\[2\] \(guarded\)\.envelope: unknown field"),
    (_set("rungs.1.confirm", "auto-approve"), r"rungs\[1\] \(shadow\)\.confirm: .* never reach the robot"),
    (_set("rungs.3.gates", []), r"rungs\[3\] \(canary\)\.gates: a rung needs at least one gate"),
    (_set("rungs.4.limits", {"time_s": 5, "speed": 3}), r"rungs\[4\] \(full\)\.limits: unknown field\(s\) \['speed'\]"),
    (_set("rungs.0.gates.0.comparison", "=="), r"rungs\[0\] \(sim\)\.gates\[0\]\.comparison"),
    (_set("rungs.0.gates.0.window_s", -1), r"window_s = -1.0 must be >= 0"),
    (lambda p: p["rungs"].pop(), r"rungs: the last rung is 'canary'; a ladder ends at 'full'"),
    (lambda p: p["rungs"].pop(0), r"band: a sim-to-real band needs a sim rung"),
    (_set("band", {"fde": 0.2}), r"band\.fde: only the drive's metrics"),
    (_set("candidate", "default"), r"candidate and incumbent are the same policy"),
    (_set("candidate", "python:no.such.module:X"), r"candidate: cannot import 'X' from 'no.such.module'"),
    (_set("incumbent", {"params": {"v_max": 99.0}}), r"incumbent\.params: MPC parameter v_max = 99.0 is outside"),
    (_set("robot.gap", {"mu_scale": 7.0}), r"robot: RealityGap\.mu_scale = 7.0 is outside"),
    (_set("robot.warp", 1), r"robot: unknown field\(s\) \['warp'\]"),
    (_set("rungs.0.gates.0.metric", "scenario_failure_rate"), r"'scenario_failure_rate' comes from a scenario campaign"),
    (_set("task", "factory"), r"only the 'car' task"),
    (_set("rungs.0.gates.0.relative_to", "incumbent"), r"rungs\[0\] \(sim\)\.gates\[0\]\.relative_to: .* needs a "
                                                      "shadow rung before it"),
])
def test_a_bad_plan_is_refused_naming_the_field(tmp_path, change, message):
    plan = copy.deepcopy(plan_dict())
    change(plan)
    with pytest.raises(PlanError, match=message):
        plan_from_dict(plan)


def test_a_candidate_adapter_for_another_task_is_refused(tmp_path):
    assert f'MANIFEST = "{ADAPTER_MANIFEST}"' in (ROOT / "agents/vlm/lora.py").read_text()  # the same file name
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / ADAPTER_MANIFEST).write_text(json.dumps({"task": "factory", "base_hash": "x"}))
    with pytest.raises(PlanError, match=r"candidate: adapter .* was trained for the 'factory' task, not 'car'"):
        plan_from_dict(plan_dict(candidate="x") | {"candidate": f"adapter:{adapter}"})


@pytest.mark.parametrize("kind, policy, message", [
    ("search", "GOOD", "a search over-samples failures"),
    ("run", "RECKLESS", "tested policy .*RECKLESS.*, not the candidate"),
])
def test_evidence_must_be_a_run_or_estimate_of_the_candidate(tmp_path, kind, policy, message):
    plan = plan_dict()
    plan["rungs"][0]["evidence"] = str(evidence(tmp_path, ref(policy), kind))
    with pytest.raises(PlanError, match=r"rungs\[0\] \(sim\)\.evidence: .*" + message):
        plan_from_dict(plan)


def test_the_command_line_names_the_file_and_runs_nothing_for_a_bad_plan(tmp_path, capsys):
    plan = plan_dict()
    del plan["rungs"][0]["gates"][0]["threshold"]
    path = write_plan(tmp_path, plan)
    assert rollout_main(["run", str(path), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "threshold" in err and not (tmp_path / "never").exists()
    assert rollout_main(["plan", str(write_plan(tmp_path, plan_dict()))]) == 0
    assert "gate would_be_interventions_per_min <= 700" in capsys.readouterr().out


# -- gates and metrics, without a robot ------------------------------------------------------------
def _data(n: int, rng: np.random.Generator, period: float = 0.05) -> RungData:
    periods = {"t": period * np.arange(1, n + 1), "v": rng.uniform(0, 3, n), "d": rng.normal(0, 0.2, n),
               "ax": rng.normal(0, 1, n), "ay": rng.normal(0, 1, n), "intervened": (rng.random(n) < 0.3).astype(float),
               **{f"cost_{c}": (rng.random(n) < 0.1).astype(float) for c in ("collision", "speed", "lateral_accel")}}
    return RungData("guarded", "Drive at 2 m/s.", period, periods, empty_decisions(), [])


drive_metrics = st.sampled_from(sorted(m for m, spec in METRICS.items() if "guarded" in spec.rungs
                                       and m not in ("latency_p95_s", "parse_failure_rate", "flagged_rate", "denied_rate")))


@settings(max_examples=60, deadline=None)
@given(metric=drive_metrics, n=st.integers(0, 80), window=st.floats(0.0, 6.0), threshold=st.floats(-10, 1000),
       comparison=st.sampled_from(["<=", "<", ">=", ">"]), seed=st.integers(0, 2**16))
def test_a_gate_passes_only_on_a_measured_value_that_meets_it_over_a_filled_window(metric, n, window, threshold,
                                                                                    comparison, seed):
    data = _data(n, np.random.default_rng(seed))
    gate = Gate(metric, threshold, comparison, window)
    result = evaluate_gate(gate, data)
    if n == 0:
        assert result.verdict == FAIL and result.value is None  # missing never passes
    elif window > data.span_s + 1e-6:
        assert result.verdict == INCONCLUSIVE
    else:
        assert result.value is not None and math.isfinite(result.value)
        assert (result.verdict == PASS) == gate.holds(result.value)
        assert result.value == measure(metric, data, window).value


@settings(max_examples=40, deadline=None)
@given(a=st.lists(st.floats(0, 1), min_size=len(PARAM_TABLE), max_size=len(PARAM_TABLE)),
       b=st.lists(st.floats(0, 1), min_size=len(PARAM_TABLE), max_size=len(PARAM_TABLE)))
def test_parameter_distance_is_a_symmetric_share_of_the_ranges(a, b):
    def params(u):
        return {p.name: p.low + x * (p.high - p.low) for p, x in zip(PARAM_TABLE, u)}

    pa, pb = params(a), params(b)
    d = param_distance(pa, pb)
    assert 0.0 <= d <= 1.0 and d == pytest.approx(param_distance(pb, pa)) and param_distance(pa, pa) == 0.0


def test_inconclusive_counts_as_a_failure_where_the_plan_says_so():
    data = _data(40, np.random.default_rng(0))
    plan = plan_from_dict(plan_dict(band={}, rungs=[{"name": "full", "gates": [
        {"metric": "task_error", "threshold": 100.0, "window_s": 30.0, "on_inconclusive": "fail"}]}]))
    assert judge(plan.rungs[0], data).action == "rollback"
    paused = plan_from_dict(plan_dict(band={}, rungs=[{"name": "full", "gates": [
        {"metric": "task_error", "threshold": 100.0, "window_s": 30.0}]}]))
    assert judge(paused.rungs[0], data).action == "pause"
    assert judge(paused.rungs[0], _data(0, np.random.default_rng(0))).action == "rollback"  # missing: fails


def test_a_gate_relative_to_the_incumbent_fails_a_worse_candidate_and_a_missing_incumbent_value():
    data = _data(40, np.random.default_rng(1))
    gate = Gate("task_error", 0.0, "<=", relative_to="incumbent")
    value = measure("task_error", data).value
    assert evaluate_gate(gate, data, {"task_error": value + 0.1}).verdict == PASS
    worse = evaluate_gate(gate, data, {"task_error": value - 0.1})
    assert worse.verdict == FAIL and worse.reference == pytest.approx(value - 0.1) and "+0.1" in worse.reason
    assert evaluate_gate(gate, data, {}).verdict == FAIL


def test_a_flagged_decision_needs_a_yes_asked_once_per_parameter_set_and_a_no_lets_the_incumbent_drive(monkeypatch):
    obs = Observation(0.0, {"speed": 0.0, "lateral_offset": 0.0}, instruction="Drive at 2 m/s.")
    incumbent = FixedParamsPolicy()
    asked: list[str] = []
    watched = WatchedCandidate(RECKLESS, incumbent, CarSafetySpec(v_max=2.5), "prompt",
                               ask=lambda question: asked.append(question) or False)
    first, second = watched.decide(obs), watched.decide(obs)
    assert len(asked) == 1 and "asks v_max 6 m/s, above the envelope's 2.5 m/s" in asked[0]
    assert first.action == second.action == incumbent.decide(obs).action and "denied" in first.thought
    assert [c["approved"] for c in watched.confirmations] == [False] and watched.records[0]["denied"] == 1.0
    approving = WatchedCandidate(RECKLESS, incumbent, CarSafetySpec(v_max=2.5), "prompt", ask=lambda _: True)
    assert approving.decide(obs).action == RECKLESS.decide(obs).action
    unflagged = WatchedCandidate(GOOD, incumbent, CarSafetySpec(v_max=2.5), "prompt", ask=lambda _: pytest.fail("asked"))
    assert unflagged.decide(obs).action == GOOD.decide(obs).action and unflagged.records[0]["flagged"] == 0.0

    def closed(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", closed)
    assert ask_operator("anyone?") is False  # no operator to answer: no
