"""How far the scripted car expert is from the best tune a search finds: the room RL has to beat its teacher.

Issue 15 asks the GRPO adapter to score above the scripted expert in at least one category.
Where the adapter reads an instruction right it writes the expert's template (SFT taught it),
so it ties the expert on that episode; to score above it, the adapter must read every
episode of a category right *and* write better numbers than the template. This measures how
much better numbers can be: per category, optuna's TPE sampler (seeded) searches the 11 MPC
parameters on training tracks and training episodes, starting from the expert's own tune
(the first trial), and the best tune found then drives the evaluation's held-out episodes
(the very episodes `shakedown eval car` uses) beside the expert, paired episode by episode.

A tune is written the way the expert's rule is: speeds relative to the instruction's target
for velocity and reverse (v_min = target - dv_below, v_max = target + dv_above), the
centerline margin as a share of the free half width (half width - half the car's width);
every other parameter absolute.

    python -m benchmarks.expert_headroom                       # 80 trials x 8 episodes a category, ~25 min
    python -m benchmarks.expert_headroom --trials 10 --search-episodes 2 --episodes 2   # a smoke run

Prints per category the expert's and the best tune's held-out score and their paired difference
with its 95 % BCa bootstrap interval; writes the tunes, the search history and the rows to
benchmarks/results/expert_headroom.json.
"""

from __future__ import annotations

import os

# One thread for numeric libraries, set before numpy is imported (drives are single-threaded).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agents.control.mpc_params import SPECS, MPCParams  # noqa: E402
from agents.evaluation.evaluate import EvalConfig, car_episodes, evaluate_car  # noqa: E402
from agents.evaluation.intervals import paired_gain, policy_ci  # noqa: E402
from agents.policies.car_expert import ScriptedCarExpert, centerline_margin, expert_params  # noqa: E402
from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig  # noqa: E402
from agents.tasks.car.instructions import CATEGORIES  # noqa: E402
from agents.training.sft_data import compact  # noqa: E402
from twin.car.tracks import TRAIN_TRACKS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEARCH_SEED = 20_000
"""Search episodes are reset from seeds here and up: apart from training's draws and the evaluation's (1000 up)."""
ABSOLUTE = ("qv", "qn", "qalpha", "qac", "qddelta", "alat_max", "a_min", "a_max")
"""Parameters searched in their own units over their whole range."""
RELATIVE_SPEED = ("velocity", "reverse")
"""Categories whose speed band is searched relative to the instruction's target speed."""


def tuned_params(category: str, tune: Mapping[str, float], target_speed: float | None, half_width: float,
                 car_width: float) -> MPCParams:
    """The expert's parameters for this instruction with `tune`'s entries in place of its own (an empty tune
    is the expert). Keys: the ABSOLUTE names; 'dv_below'/'dv_above' (m/s around the target, velocity and
    reverse); 'v_min'/'v_width' (v_max = v_min + v_width, other categories); 'margin_share' (share of the free
    half width, clipped to the margin's range); 'margin_inset' (m inside the free half width, written to 0.01 m as
    an answer writes it). Values are clipped into the parameters' ranges."""
    p = expert_params(category, target_speed, half_width, car_width).as_dict()
    p.update({k: float(tune[k]) for k in ABSOLUTE if k in tune})
    if "dv_below" in tune:
        p["v_min"], p["v_max"] = float(target_speed) - tune["dv_below"], float(target_speed) + tune["dv_above"]
    if "v_min" in tune:
        p["v_min"], p["v_max"] = tune["v_min"], tune["v_min"] + tune["v_width"]
    if "margin_share" in tune:
        p["track_safety_margin"] = tune["margin_share"] * max(0.0, half_width - car_width / 2)
    if "margin_inset" in tune:
        p["track_safety_margin"] = float(compact(centerline_margin(half_width, car_width, tune["margin_inset"]), 2))
    clipped = {k: float(np.clip(v, SPECS[k].low, SPECS[k].high)) for k, v in p.items()}
    clipped["v_min"] = min(clipped["v_min"], clipped["v_max"])
    return MPCParams(**clipped)


def suggest(trial: optuna.Trial, category: str) -> dict[str, float]:
    """One tune for `category` (see tuned_params for what the keys mean)."""
    tune = {k: trial.suggest_float(k, SPECS[k].low, SPECS[k].high) for k in ABSOLUTE}
    if category in RELATIVE_SPEED:
        tune |= {"dv_below": trial.suggest_float("dv_below", 0.0, 1.0), "dv_above": trial.suggest_float("dv_above", 0.0, 1.0)}
    else:
        tune |= {"v_min": trial.suggest_float("v_min", 0.0, 3.0), "v_width": trial.suggest_float("v_width", 0.0, 9.0)}
    if category == "centerline":
        tune["margin_share"] = trial.suggest_float("margin_share", 0.0, 1.1)
    else:
        tune["track_safety_margin"] = trial.suggest_float("track_safety_margin", 0.0, 1.0)
    return tune


def expert_tune(category: str) -> dict[str, float]:
    """The expert's own tune written in the search's keys (for a track of the default width), the first trial."""
    target = 1.0 if category == "velocity" else -1.0
    p = expert_params(category, target, 1.0, 0.3).as_dict()
    tune = {k: p[k] for k in ABSOLUTE}
    if category in RELATIVE_SPEED:
        tune |= {"dv_below": target - p["v_min"], "dv_above": p["v_max"] - target}
    else:
        tune |= {"v_min": max(0.0, p["v_min"]), "v_width": p["v_max"] - max(0.0, p["v_min"])}
    if category == "centerline":
        tune["margin_share"] = p["track_safety_margin"] / (1.0 - 0.3 / 2)
    else:
        tune["track_safety_margin"] = p["track_safety_margin"]
    return tune


class SearchEpisodes:
    """A category's search episodes on the training tracks, each in its own env so the default drive it is
    judged against is driven once, not once per trial."""

    def __init__(self, category: str, episodes: int, duration_s: float, tracks: tuple[str, ...] = TRAIN_TRACKS) -> None:
        self.category = category
        self.envs = []
        for i in range(episodes):
            env = CarInstructionEnv(CarTaskConfig(tracks=tracks, camera=False, duration_s=duration_s))
            env.reset(seed=SEARCH_SEED + 100 * CATEGORIES.index(category) + i, options={"category": category})
            self.envs.append(env)

    def score(self, tune: Mapping[str, float]) -> float:
        """The tune's mean score over the episodes (decided as TunedCarExpert decides, from the observation)."""
        policy = TunedCarExpert({self.category: tune})
        return float(np.mean([env.evaluate(policy.decide(env.observation()).action).improvement for env in self.envs]))

    def close(self) -> None:
        for env in self.envs:
            env.close()


class TunedCarExpert(ScriptedCarExpert):
    """The expert with a searched tune per category in place of its own numbers."""

    def __init__(self, tunes: Mapping[str, Mapping[str, float]]) -> None:
        self.tunes = {k: dict(v) for k, v in tunes.items()}
        self.policy_id, self.label = "tuned-expert", "expert, searched tune"

    def params(self, category: str, target_speed: float | None, half_width: float, car_width: float) -> MPCParams:
        return tuned_params(category, self.tunes.get(category, {}), target_speed, half_width, car_width)


def search(category: str, trials: int, episodes: int, duration_s: float,
           seed: int) -> tuple[dict[str, float], float, list[float]]:
    """The best tune TPE finds in `trials`, the expert's own score on the same episodes, and every trial's
    score in order (the first trial is the expert's tune written in the search's keys: a warm start)."""
    found = SearchEpisodes(category, episodes, duration_s)
    expert_score = found.score({})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(expert_tune(category))
    t0 = time.perf_counter()

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = trial.number + 1
        rate = done / (time.perf_counter() - t0)
        print(f"  {category}: trial {done}/{trials}  score {trial.value:+.3f}  best {study.best_value:+.3f}  "
              f"{rate:.2f} trials/s  ETA {(trials - done) / rate:.0f} s", flush=True)

    study.optimize(lambda t: found.score(suggest(t, category)), n_trials=trials, callbacks=[report])
    found.close()
    return dict(study.best_params), expert_score, [float(t.value) for t in study.trials]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=80, help="tunes tried per category (the first is the expert's)")
    ap.add_argument("--search-episodes", type=int, default=8, help="training episodes each tune drives, per category")
    ap.add_argument("--episodes", type=int, default=10, help="held-out evaluation episodes per category")
    ap.add_argument("--duration-s", type=float, default=8.0, help="simulated seconds per drive")
    ap.add_argument("--seed", type=int, default=0, help="seeds the sampler")
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "expert_headroom.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    tunes, expert_scores, histories = {}, {}, {}
    for cat in args.categories:
        tunes[cat], expert_scores[cat], histories[cat] = search(cat, args.trials, args.search_episodes,
                                                                args.duration_s, args.seed)
    expert, tuned = ScriptedCarExpert(), TunedCarExpert(tunes)
    cfg = EvalConfig(world="car", episodes=args.episodes, duration_s=args.duration_s, zero_shot=False)
    episodes = [(seed, opts) for seed, opts in car_episodes(cfg) if opts["category"] in args.categories]
    rows = evaluate_car(cfg, [expert, tuned], episodes=episodes)
    table = Table(title=f"The expert against the best of {args.trials} searched tunes: held-out, "
                        f"{args.episodes} episodes a category (score points, 95 % BCa)")
    for col in ("category", "search: expert", "search: best", "held-out: expert", "held-out: searched tune",
                "searched - expert", "episodes better"):
        table.add_column(col)
    summary = {}
    for cat in args.categories:
        mine = [r for r in rows if r["category"] == cat]
        e, t = policy_ci(mine, expert.label, category=cat), policy_ci(mine, tuned.label, category=cat)
        gain = paired_gain(mine, tuned.label, expert.label, category=cat)
        by_seed = {(r["policy"], r["seed"]): r["improvement"] for r in mine}
        better = sum(by_seed[(tuned.label, s)] > by_seed[(expert.label, s)] + 1e-9 for s in {r["seed"] for r in mine})
        summary[cat] = {"search_expert": expert_scores[cat], "search_best": max(histories[cat]), "expert": dataclasses.asdict(e),
                        "searched": dataclasses.asdict(t), "gain": dataclasses.asdict(gain), "episodes_better": better}
        table.add_row(cat, f"{100 * expert_scores[cat]:.1f}", f"{100 * max(histories[cat]):.1f}", f"{100 * e.mean:.1f}",
                      f"{100 * t.mean:.1f}", f"{100 * gain.mean:+.1f} [{100 * gain.low:+.1f}, {100 * gain.high:+.1f}]",
                      f"{better}/{args.episodes}")
    Console(width=200).print(table)
    write_result("expert_headroom", args, t0, rows, summary=summary, tunes=tunes, search_history=histories)


def write_result(benchmark: str, args: argparse.Namespace, t0: float, rows: list[dict], **fields: Any) -> None:
    """Write a car-expert benchmark's JSON to args.out: its name, date, arguments and seconds since `t0`, then
    `fields`, then the drive rows without their thoughts."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": benchmark, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds": time.perf_counter() - t0, **fields,
        "rows": [{k: v for k, v in r.items() if k not in ("thought", "raw", "thought_flags")} for r in rows],
    }, indent=1))
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
