"""Studies of one scenario: plain runs, failure searches and probability estimates, as campaigns.

Search and estimation algorithms (`scenarios.search`, `scenarios.estimate`) see the world
only as a batch function z -> robustness. `CampaignEvaluator` is that function: it runs a
batch as a campaign of episodes (process pool or Ray), one row per episode in SQLite, so a
study killed half-way resumes where it stopped: the algorithms are deterministic for a
seed, so a rerun asks for the same samples, and the stored rows answer them instead of new
episodes. Invalid runs (a validity requirement failed) count as +inf robustness: rejected,
never a failure; errored episodes are nan and every algorithm leaves them out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.campaign import EpisodeStore, open_backend, run_campaign
from scenarios.episode import episode_row, runner_for
from scenarios.estimate import Estimate, cross_entropy_is, monte_carlo, subset_simulation
from scenarios.search import SAMPLERS, Sample, most_likely, search
from twin.core.progress import NullProgress, Progress, progress_stage

ESTIMATORS = ("mc", "ce-is", "subset")
ESTIMATOR_SIZES = {"mc": {"n": 1000}, "ce-is": {"n_per_stage": 200, "n_final": 400}, "subset": {"n_per_level": 200}}
"""Episode counts each estimator uses unless told otherwise."""


def episode_seed(seed: int, index: int) -> int:
    """The nuisance seed of episode `index` of a study seeded `seed` (independent of worker and order)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def robustness_of(result: dict[str, Any] | None) -> float:
    """A stored episode's robustness for the algorithms: +inf when invalid, nan when errored."""
    if result is None:
        return math.nan
    if not result["valid"]:
        return math.inf
    return float(result["robustness"])  # stored as a number, or 'inf' / '-inf'



class CampaignEvaluator(contextlib.ExitStack):
    """z batches -> robustness, each batch a stored, resumable campaign of episodes.

    Use it as a context manager: its workers stay up across batches (each builds the world once)."""

    def __init__(self, text: str, store: EpisodeStore, study_id: str, seed: int = 0, backend: str = "pool",
                 workers: int = 2) -> None:
        sha = hashlib.sha256(text.encode()).hexdigest()
        # The scenario's hash in the id: the same study of an edited scenario (or with the shield
        # switched) is a new campaign, never a clash with the stored one.
        self.text, self.store, self.study_id, self.seed = text, store, f"{study_id}/{sha[:10]}", seed
        super().__init__()
        self.backend, self.workers = backend, workers
        self._executor = None
        self.space = runner_for(text).space
        self.rows: list[dict[str, Any]] = []
        """Every episode evaluated so far: index, z, seed, result (None when errored), error."""
        self.spec = {"scenario_sha256": sha, "study": study_id, "seed": seed}

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(np.asarray(z, float))
        start = len(self.rows)
        items = [(start + i, {"scenario": self.text, "z": [float(v) for v in zi], "seed": episode_seed(self.seed, start + i)})
                 for i, zi in enumerate(z)]
        todo = len(set(i for i, _ in items) - self.store.done(self.study_id)) if self.study_id in self.store.campaigns() \
            else len(items)
        if self._executor is None and self.backend != "inline" and todo > 1:
            self._executor = self.enter_context(open_backend(self.backend, episode_row, self.workers))
        # Silent: the study shows one bar for all its batches.
        stored = run_campaign(episode_row, items, self.store, self.study_id, self.spec, backend=self.backend,
                              workers=self.workers, progress=NullProgress(), executor=self._executor)
        by_index = {row.index: row for row in stored}
        out = np.empty(len(items))
        for k, (index, payload) in enumerate(items):
            row = by_index[index]
            self.rows.append({"index": index, "z": payload["z"], "seed": payload["seed"], "result": row.result,
                              "error": row.error})
            out[k] = robustness_of(row.result)
        return out


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """What a study found, ready for JSON and the HTML report."""

    scenario: str
    """Scenario name."""
    kind: str
    """'run', 'search' or 'estimate'."""
    method: str
    seed: int
    dims: tuple[str, ...]
    """Names of the sample vector's coordinates."""
    episodes: list[dict[str, Any]]
    """One row per episode: index, z, seed, robustness, failed, valid, signature, loglik, error."""
    estimate: dict[str, Any] | None = None
    """For an estimate: p, CI, ESS, episodes, history."""
    most_likely: dict[str, Any] | None = None
    """For a search: the most likely failure found (highest log-likelihood)."""
    text: str = ""
    """The scenario file's text as run (replays and reports need nothing else)."""
    source: str = ""
    """Where the scenario came from (a file or a library name), for replay commands."""

    def failures(self) -> list[dict[str, Any]]:
        return [e for e in self.episodes if e["failed"]]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1, default=_json_default) + "\n")
        return path


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def _episodes(evaluator: CampaignEvaluator) -> list[dict[str, Any]]:
    out = []
    for row in evaluator.rows:
        res = row["result"]
        out.append({"index": row["index"], "z": row["z"], "seed": row["seed"],
                    "robustness": robustness_of(res) if res is not None else math.nan,
                    "failed": bool(res and res["failed"]), "valid": bool(res and res["valid"]),
                    "signature": res["signature"] if res else None, "loglik": res["loglik"] if res else math.nan,
                    "monitors": res["monitors"] if res else {}, "error": row["error"],
                    "shield": (res or {}).get("info", {}).get("shield", {}).get("interventions")})
    return out


def run_nominal(text: str, store: EpisodeStore, episodes: int, seed: int = 0, backend: str = "pool", workers: int = 2,
                progress: Progress | None = None, source: str = "") -> StudyResult:
    """`episodes` episodes under the nominal distributions: plain Monte Carlo, with its exact interval.

    A scenario with nothing to sample still has seeded randomness (sensor noise, a reckless driver, the
    twin's own randomization): its episodes differ by seed only."""
    with CampaignEvaluator(text, store, f"run/{seed}", seed, backend, workers) as ev:
        return _run_nominal(ev, episodes, seed, progress, text, source)


def _run_nominal(ev: CampaignEvaluator, episodes: int, seed: int, progress: Progress | None, text: str,
                 source: str) -> StudyResult:
    d, workers = ev.space.d, ev.workers

    def evaluate(z: np.ndarray) -> np.ndarray:
        return ev(z if d else np.zeros((len(z), 0)))

    with progress_stage(progress, f"run {ev.space.scenario.name}", episodes) as bar:
        est = monte_carlo(evaluate, max(d, 1), episodes, np.random.default_rng(seed), batch=max(8 * workers, 32),
                          progress=lambda done, planned: bar.set_completed(len(ev.rows)))
    return StudyResult(ev.space.scenario.name, "run", "nominal", seed, tuple(ev.space.names()), _episodes(ev),
                       estimate=_estimate_dict(est), text=text, source=source)


def search_failures(text: str, store: EpisodeStore, method: str, budget: int, seed: int = 0, batch: int = 16,
                    backend: str = "pool", workers: int = 2, progress: Progress | None = None, source: str = "",
                    **options: Any) -> StudyResult:
    """Spend `budget` episodes looking for failures with one of `SAMPLERS`."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown search method {method!r}; choose one of {', '.join(SAMPLERS)}")
    with CampaignEvaluator(text, store, f"search/{method}/{seed}", seed, backend, workers) as ev:
        return _search(ev, method, budget, seed, batch, progress, text, source, options)


def _search(ev: CampaignEvaluator, method: str, budget: int, seed: int, batch: int, progress: Progress | None,
            text: str, source: str, options: dict[str, Any]) -> StudyResult:
    if ev.space.d == 0:
        raise ValueError(f"scenario {ev.space.scenario.name!r} samples nothing (no random parameter, event parameter or "
                         "disturbance): there is nothing to search; use `run`")
    with progress_stage(progress, f"search {method} {ev.space.scenario.name}", budget) as bar:
        samples = search(ev, ev.space.d, np.random.default_rng(seed), method, budget, batch,
                         progress=lambda done, planned: bar.set_completed(done), **options)
    best: Sample | None = most_likely(samples)
    episodes = _episodes(ev)
    ml = None
    if best is not None:
        ml = {**episodes[best.index], "loglik_z": best.loglik}
    return StudyResult(ev.space.scenario.name, "search", method, seed, tuple(ev.space.names()), episodes, most_likely=ml,
                       text=text, source=source)


def estimate_probability(text: str, store: EpisodeStore, method: str = "ce-is", seed: int = 0, backend: str = "pool",
                         workers: int = 2, progress: Progress | None = None, source: str = "",
                         **options: Any) -> StudyResult:
    """P(failure) under the nominal distributions, with its interval: 'mc', 'ce-is' or 'subset'."""
    if method not in ESTIMATORS:
        raise ValueError(f"unknown estimator {method!r}; choose one of {', '.join(ESTIMATORS)}")
    with CampaignEvaluator(text, store, f"estimate/{method}/{seed}", seed, backend, workers) as ev:
        return _estimate(ev, method, seed, progress, text, source, options)


def _estimate(ev: CampaignEvaluator, method: str, seed: int, progress: Progress | None, text: str, source: str,
              options: dict[str, Any]) -> StudyResult:
    workers = ev.workers
    if ev.space.d == 0:
        raise ValueError(f"scenario {ev.space.scenario.name!r} samples nothing; importance sampling needs sampled "
                         "coordinates: use `run` for plain Monte Carlo over seeds")
    rng = np.random.default_rng(seed)
    batch = options.pop("batch", max(4 * workers, 32))
    sizes = {k: options.pop(k, v) for k, v in ESTIMATOR_SIZES[method].items()}
    # The bar's total: CE-IS and subset simulation usually settle within about four stages or levels.
    planned = sizes["n"] if method == "mc" else 4 * sizes.get("n_per_stage", sizes.get("n_per_level", 0)) + \
        sizes.get("n_final", 0)
    estimator = {"mc": monte_carlo, "ce-is": cross_entropy_is, "subset": subset_simulation}[method]
    with progress_stage(progress, f"estimate {method} {ev.space.scenario.name}", planned) as bar:
        def shown(done: int, _planned: int) -> None:
            bar.set_completed(len(ev.rows))

        est = estimator(ev, ev.space.d, rng=rng, batch=batch, progress=shown, **sizes, **options)
    return StudyResult(ev.space.scenario.name, "estimate", method, seed, tuple(ev.space.names()), _episodes(ev),
                       estimate=_estimate_dict(est), text=text, source=source)


def _estimate_dict(est: Estimate) -> dict[str, Any]:
    out = dataclasses.asdict(est)
    out["summary"] = est.summary()
    return out
