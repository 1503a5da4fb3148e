"""The policies a rung serves around the candidate: the shadow pair and the watched candidate.

`ShadowPolicy` (the shadow rung) answers every observation with the incumbent's decision,
so the incumbent drives; on a worker thread, so the incumbent's answer is never late, it
asks the candidate the same observation, logs the candidate's decision (never applied) to a
signed shadow log, and measures how far the two disagree: the distance of their parameter
sets, the twin-predicted trajectory difference (ADE/FDE of one short `CarTwin` rollout per
parameter set from the observed state) and the shield interventions the candidate's
rollout would have drawn. Open-loop numbers alone mislead (REFERENCES.md section 9), which
is why the later rungs close the loop.

`WatchedCandidate` (sim, guarded, canary, full) is the candidate itself, timed, its failed
answers counted; a decision that asks for more speed than the rung's envelope allows, or
lies further than `flag_distance` from the incumbent's, is flagged, and on a rung that
needs confirmation it is approved, or denied and replaced by the incumbent's decision.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agents.control.loop import drive
from agents.control.mpc import FrenetMPC, MPCConfig
from agents.control.mpc_params import MPCParams, clamp_dict
from bridge.protocol import CommandMsg
from bridge.rollout.metrics import param_distance
from safety.audit.log import AuditLog
from safety.audit.records import decision_body
from safety.car.guard import CarGuard
from safety.car.spec import CarSafetySpec
from twin.car.twin import CarTwin, CarTwinConfig
from twin.core.contracts import Decision, Observation, Policy

LOG = logging.getLogger("shakedown.rollout")
NAN = math.nan


def ask_operator(question: str) -> bool:
    """The command-line prompt; no operator to answer (no terminal, closed input) means no."""
    try:
        answer = input(f"{question}\nApprove? [y/N] ")
    except (EOFError, OSError):
        return False
    return answer.strip().lower() in ("y", "yes")


def _answer(decision: Decision) -> tuple[MPCParams, bool]:
    """The parameters a decision asks for (as the robot would see them) and whether it came through clean:
    parsed, not a fallback, nothing the robot would have to refuse."""
    params, notes = clamp_dict(decision.action)
    return params, decision.parse_status == "ok" and not notes


class TwinPredictor:
    """Short twin rollouts of parameter sets from an observed state, through a shield with the rung's envelope."""

    def __init__(self, track: str, envelope: CarSafetySpec, control_hz: float, horizon_s: float = 2.0,
                 seed: int = 0) -> None:
        self.twin = CarTwin(CarTwinConfig(track=track, control_hz=control_hz, physics_dt=0.01, lidar=False,
                                          camera=False))
        self.mpc = FrenetMPC(self.twin.track, MPCConfig(dt=1.0 / control_hz))
        self.guard = CarGuard(self.twin, envelope)
        self.horizon_s, self.seed = horizon_s, seed

    def start(self, observation: Observation, telemetry: dict[str, float] | None) -> tuple[float, float, float]:
        """(s, d, v) to start from: the observed offset and speed, and the position along the track. The
        observation carries none (a policy sees what its prompt shows); the robot's telemetry does when it
        sends its state with each command (one period older than the observation: close enough). Without it
        the rollouts start at the track's first point of the observed curvature."""
        d, v = float(observation.state.get("lateral_offset", 0.0)), float(observation.state.get("speed", 0.0))
        if telemetry and "s" in telemetry:
            return float(telemetry["s"]), d, v
        track = self.twin.track
        k = int(np.argmin(np.abs(track.curvature - float(observation.state.get("curvature", 0.0)))))
        return float(track.s[k]), d, v

    def rollout(self, params: MPCParams, start: tuple[float, float, float]) -> Any:
        s, d, v = start
        self.twin.reset(np.random.default_rng(self.seed), s=s, d=d, v=v)
        return drive(self.twin, self.mpc, params, self.horizon_s, self.guard)

    def compare(self, observation: Observation, candidate: MPCParams, incumbent: MPCParams,
                telemetry: dict[str, float] | None = None) -> dict[str, float]:
        """ADE and FDE between the two predicted paths (m), the shield's interventions on each, the horizon."""
        start = self.start(observation, telemetry)
        cand, inc = self.rollout(candidate, start), self.rollout(incumbent, start)
        gap = np.hypot(cand["x"] - inc["x"], cand["y"] - inc["y"])
        return {"ade": float(gap.mean()), "fde": float(gap[-1]), "would_be": float(cand.shield.get("interventions", 0)),
                "incumbent_would_be": float(inc.shield.get("interventions", 0)), "predicted_s": self.horizon_s,
                "start_s": start[0]}

    def close(self) -> None:
        self.twin.close()


class ShadowPolicy:
    """The incumbent drives; the candidate sees the same observations and is only recorded."""

    def __init__(self, incumbent: Policy, candidate: Policy, predictor: TwinPredictor | None = None,
                 log: AuditLog | None = None) -> None:
        self.incumbent, self.candidate, self.predictor, self.log = incumbent, candidate, predictor, log
        self.policy_id = f"shadow[{incumbent.policy_id} drives, {candidate.policy_id} shadowed]"
        self.records: list[dict[str, float]] = []
        """One per candidate decision (bridge.rollout.metrics.DECISION_COLUMNS)."""
        self.skipped = 0
        """Observations the candidate never saw because it was still busy with an earlier one (newest wins)."""
        self._telemetry: dict[str, float] | None = None
        self._pending: tuple[Observation, Decision, dict[str, float] | None] | None = None
        self._busy = False
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="rollout-shadow", daemon=True)
        self._thread.start()

    def telemetry(self, direction: str, message: Any, arrays: list) -> None:
        """A PolicyServer recorder: keeps the robot's latest reported state (when its commands carry one)."""
        state = getattr(message, "state", None) if isinstance(message, CommandMsg) else None
        if direction == "in" and state:
            self._telemetry = dict(state)

    def decide(self, observation: Observation) -> Decision:
        decision = self.incumbent.decide(observation)
        with self._cond:
            if self._pending is not None:
                self.skipped += 1
            self._pending = (observation, decision, self._telemetry)
            self._cond.notify_all()
        return decision

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait(0.2)
                if self._stop:
                    return
                job, self._pending, self._busy = self._pending, None, True
            try:
                self._shadow(*job)
            except Exception:  # a bug in one comparison must not stop the shadow recording the next
                LOG.exception("shadow comparison failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _shadow(self, observation: Observation, incumbent: Decision, telemetry: dict[str, float] | None) -> None:
        row = {"t": observation.timestamp, "latency_s": NAN, "parse_ok": 0.0, "flagged": NAN, "denied": NAN,
               "param_distance": NAN, "ade": NAN, "fde": NAN, "would_be": NAN, "predicted_s": NAN}
        started = time.perf_counter()
        try:
            decision = self.candidate.decide(observation)
        except Exception as exc:  # counted as a failed answer, like the server's refusal would be
            row["latency_s"] = time.perf_counter() - started
            self.records.append(row)
            self._log(observation, Decision({}, self.candidate.policy_id, parse_status=f"error: {exc!r}"), incumbent, {})
            return
        row["latency_s"] = time.perf_counter() - started
        params, clean = _answer(decision)
        inc_params, _ = clamp_dict(incumbent.action)
        row["parse_ok"] = float(clean)
        row["param_distance"] = param_distance(params.as_dict(), inc_params.as_dict())
        predicted: dict[str, float] = {}
        if self.predictor is not None:
            try:
                predicted = self.predictor.compare(observation, params, inc_params, telemetry)
            except Exception:  # the prediction is missing, and the metric says so
                LOG.exception("twin prediction failed")
            row.update({k: predicted[k] for k in ("ade", "fde", "would_be", "predicted_s") if k in predicted})
        self.records.append(row)
        self._log(observation, decision, incumbent, {"param_distance": row["param_distance"], **predicted})

    def _log(self, observation: Observation, decision: Decision, incumbent: Decision, measured: dict) -> None:
        if self.log is not None:
            self.log.append("shadow_decision", decision_body(
                observation, decision, executed={}, context={"rung": "shadow", "applied": False,
                                                             "incumbent_policy": incumbent.policy_id,
                                                             "incumbent_action": dict(incumbent.action), **measured}))

    def close(self, timeout_s: float = 30.0) -> None:
        """Let the candidate finish what it was given (up to `timeout_s`), then stop."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (self._pending is not None or self._busy) and time.monotonic() < deadline:
                self._cond.wait(0.1)
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        if self.predictor is not None:
            self.predictor.close()


class WatchedCandidate:
    """The candidate as served on a rung where it drives: timed, its answers checked, flagged ones confirmed."""

    def __init__(self, candidate: Policy, incumbent: Policy, envelope: CarSafetySpec, confirm: str = "none",
                 flag_distance: float = 0.0, ask: Callable[[str], bool] | None = None) -> None:
        self.candidate, self.incumbent, self.envelope = candidate, incumbent, envelope
        self.confirm, self.flag_distance = confirm, flag_distance
        self.ask = ask or ask_operator
        self.policy_id = candidate.policy_id
        self.records: list[dict[str, float]] = []
        self.confirmations: list[dict[str, Any]] = []
        """Each flagged parameter set's answer: when, why flagged, approved or not, by whom."""
        self._answered: dict[tuple[float, ...], bool] = {}

    def flags(self, params: MPCParams, distance: float | None) -> list[str]:
        """Why a decision needs an operator's yes (empty: it does not)."""
        reasons = []
        if params.v_max > self.envelope.v_max:
            reasons.append(f"asks v_max {params.v_max:g} m/s, above the envelope's {self.envelope.v_max:g} m/s")
        if params.v_min < -self.envelope.v_reverse_max:
            reasons.append(f"asks v_min {params.v_min:g} m/s, beyond the envelope's reverse limit "
                           f"{self.envelope.v_reverse_max:g} m/s")
        if distance is not None and distance > self.flag_distance:
            reasons.append(f"lies {distance:.2f} from the incumbent's parameters (flag_distance {self.flag_distance:g})")
        return reasons

    def decide(self, observation: Observation) -> Decision:
        row = {"t": observation.timestamp, "latency_s": NAN, "parse_ok": 0.0, "flagged": 0.0, "denied": 0.0,
               "param_distance": NAN, "ade": NAN, "fde": NAN, "would_be": NAN, "predicted_s": NAN}
        started = time.perf_counter()
        try:
            decision = self.candidate.decide(observation)
        except Exception:
            row["latency_s"] = time.perf_counter() - started
            self.records.append(row)
            raise  # the server answers with a refusal, never a guessed action
        row["latency_s"] = time.perf_counter() - started
        params, clean = _answer(decision)
        row["parse_ok"] = float(clean)
        incumbent = None
        if self.flag_distance > 0:
            incumbent = self.incumbent.decide(observation)
            row["param_distance"] = param_distance(params.as_dict(), incumbent.action)
        reasons = self.flags(params, row["param_distance"] if self.flag_distance > 0 else None)
        row["flagged"] = float(bool(reasons))
        if reasons and self.confirm != "none" and not self._approved(params, reasons, observation):
            incumbent = incumbent or self.incumbent.decide(observation)
            row["denied"] = 1.0
            decision = Decision(action=dict(incumbent.action), policy_id=incumbent.policy_id,
                                thought=f"candidate {self.candidate.policy_id} denied: {'; '.join(reasons)}")
        self.records.append(row)
        return decision

    def _approved(self, params: MPCParams, reasons: list[str], observation: Observation) -> bool:
        """Asked once per parameter set: an operator is not asked the same question every second."""
        key = tuple(round(v, 6) for v in params.as_array())
        if key not in self._answered:
            if self.confirm == "prompt":
                question = (f"Candidate {self.candidate.policy_id} wants {params.as_dict()}: "
                            f"{'; '.join(reasons)}.")
                approved = self.ask(question)
            else:
                approved = self.confirm == "auto-approve"
            self._answered[key] = approved
            self.confirmations.append({"t": observation.timestamp, "wall_time": time.time(),
                                       "policy_id": self.candidate.policy_id, "reasons": reasons,
                                       "params": params.as_dict(), "approved": approved, "by": self.confirm})
        return self._answered[key]
