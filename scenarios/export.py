"""Exact replay, and failures kept as a regression corpus that pytest runs.

A case is (scenario text, sample vector, seed) plus what was observed: the signature, the
robustness, the trace hash, and the versions of the twin and the policy. `export` writes
one JSON file per case and a pytest module that replays each one and asserts the
monitor's verdict: `expect: pass` guards a fix (the case must not fail again), `expect:
fail` pins a known failure (it must still reproduce, the same way). Replaying checks the
trace hash, so a silent change in the twin shows up as a changed hash, not as a flaky test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any, Literal

import yaml

from scenarios.episode import EpisodeResult, run_episode, runner_for

CASE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Case:
    """One failure kept for replay."""

    scenario: str
    """The scenario file's full text (a case does not depend on the file staying the same)."""
    scenario_name: str
    z: tuple[float, ...]
    seed: int
    expect: Literal["pass", "fail"]
    """'pass': the monitors must hold (a fixed bug stays fixed); 'fail': the failure must reproduce."""
    signature: dict[str, Any] | None
    """The failure observed when the case was found."""
    robustness: float
    trace_hash: str
    """Trace hash when found (replays compare against it when the system is unchanged)."""
    versions: dict[str, str]
    """Shakedown version and git commit, and the policy's id."""

    @property
    def case_id(self) -> str:
        key = json.dumps([self.scenario, self.z, self.seed], sort_keys=True).encode()
        return f"{self.scenario_name}-{hashlib.sha256(key).hexdigest()[:10]}"


def versions(policy_id: str) -> dict[str, str]:
    """What made the result: package version, git commit (when run from a checkout), policy id."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("shakedown")
    except PackageNotFoundError:
        package = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"shakedown": package, "commit": commit, "policy": policy_id}


def with_system(text: str, **changes: Any) -> str:
    """The scenario text with system fields changed (e.g. shield=True: the fixed system), comments dropped."""
    doc = yaml.safe_load(text)
    doc.setdefault("system", {}).update(changes)
    return yaml.safe_dump(doc, sort_keys=False)


def make_case(text: str, z: Any, seed: int, expect: Literal["pass", "fail"]) -> tuple[Case, EpisodeResult]:
    """Run the case once and record it."""
    result, _ = run_episode(text, z, seed)
    if expect == "fail" and not result.failed:
        raise ValueError(f"expect='fail' but the case passes now (robustness {result.robustness:.3g})")
    scenario = runner_for(text).scenario
    sig = dataclasses.asdict(result.signature) if result.signature is not None else None
    case = Case(text, scenario.name, tuple(map(float, z)), int(seed), expect, sig, float(result.robustness),
                result.trace_hash, versions(str(result.info.get("decision", {}).get("policy_id", "unknown"))))
    return case, result


def replay(case: Case) -> tuple[EpisodeResult, bool]:
    """Replay a case; returns the result and whether the trace is bit-identical to the recorded one."""
    result, _ = run_episode(case.scenario, case.z, case.seed)
    return result, result.trace_hash == case.trace_hash


def verdict_holds(case: Case, result: EpisodeResult) -> tuple[bool, str]:
    """Does the replay give the verdict the case expects? And a sentence saying why not."""
    if case.expect == "pass":
        ok = not result.failed
        return ok, "" if ok else f"{case.case_id} fails again: {result.signature} (robustness {result.robustness:.4g})"
    same = result.failed and result.signature is not None and case.signature is not None and \
        result.signature.monitor == case.signature["monitor"]
    return same, "" if same else f"{case.case_id} no longer fails as recorded ({case.signature}); got {result.signature}"


TEST_MODULE = '''"""Regression cases exported by `shakedown scenario export` (do not edit: re-export instead).

Each case replays (scenario, sample vector, seed) and asserts the monitors' verdict."""

from pathlib import Path

import pytest

from scenarios.export import load_case, replay, verdict_holds

CASES = sorted(Path(__file__).parent.glob("cases/*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path):
    case = load_case(path)
    result, identical = replay(case)
    ok, why = verdict_holds(case, result)
    assert ok, why + ("" if identical else " (the trace differs from the recorded one: the twin or policy changed)")
'''


def export(cases: list[Case], directory: str | Path) -> list[Path]:
    """Write cases (one JSON each) and the pytest module that replays them; returns the files written."""
    directory = Path(directory)
    (directory / "cases").mkdir(parents=True, exist_ok=True)
    written = []
    for case in cases:
        path = directory / "cases" / f"{case.case_id}.json"
        path.write_text(json.dumps({**dataclasses.asdict(case), "case_version": CASE_VERSION}, indent=1) + "\n")
        written.append(path)
    module = directory / "test_scenario_regressions.py"
    module.write_text(TEST_MODULE)
    (directory / "conftest.py").touch()
    return [*written, module]


def load_case(path: str | Path) -> Case:
    data = json.loads(Path(path).read_text())
    data.pop("case_version", None)
    data["z"] = tuple(data["z"])
    return Case(**data)
