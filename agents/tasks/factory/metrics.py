"""Named metrics of a factory episode, from the twin's ground truth: how well parts were
sorted and how safe the cell stayed. One place for every caller (envs, eval, demo)."""

from __future__ import annotations

from twin.factory.twin import FactoryTwin


def line_metrics(twin: FactoryTwin, min_separation: float, shield_interventions: int) -> dict[str, float]:
    """Sorting and safety metrics of the episode so far."""
    # The policy is judged on the parts it decided; parts the line held because they reached
    # the pick station undecided are counted apart ('held_undecided').
    parts = [p for p in twin.parts.values() if p.decision is not None]
    done = [p for p in parts if p.status in ("binned", "dropped")]
    good = [p for p in done if not p.spec.defective]
    bad = [p for p in done if p.spec.defective]
    correct = sum((p.bin == "accept") != p.spec.defective and p.bin in ("accept", "reject") for p in done)
    minutes = max(twin.t, 1e-9) / 60.0
    return {
        "parts_done": float(len(done)),
        "accuracy": correct / len(done) if done else float("nan"),
        "false_accept_rate": sum(p.bin == "accept" for p in bad) / len(bad) if bad else 0.0,
        "false_reject_rate": sum(p.bin == "reject" for p in good) / len(good) if good else 0.0,
        "hold_rate": sum(p.bin == "hold" for p in done) / len(done) if done else 0.0,
        "throughput_per_min": len(done) / minutes,
        "min_separation": min_separation,
        "dropped": float(twin.counters["dropped"]),
        "grasp_failures": float(twin.counters["grasp_failures"]),
        "held_undecided": float(twin.counters["held_undecided"]),
        "shield_interventions": float(shield_interventions),
        "sim_time": twin.t,
    }
