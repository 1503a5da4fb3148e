"""The shield at scale: the reckless-driver scenario as a campaign (docs/scenarios.md has the 10,000-episode counts)."""

from pathlib import Path

import pytest

from scenarios.campaign import EpisodeStore
from scenarios.export import with_system
from scenarios.study import run_nominal
from twin.core.progress import NullProgress

TEXT = Path("scenarios/library/car/reckless-driver.yaml").read_text()


def _campaign(tmp_path, shield: bool, episodes: int):
    result = run_nominal(with_system(TEXT, shield=shield), EpisodeStore(tmp_path / f"{shield}.db"), episodes, seed=7,
                         backend="pool", workers=2, progress=NullProgress())
    assert not [e for e in result.episodes if e["error"]], "no episode may error"
    return result


@pytest.mark.slow
def test_a_few_hundred_reckless_episodes_never_fail_with_the_shield_and_mostly_fail_without(tmp_path):
    on = _campaign(tmp_path, True, 300)
    off = _campaign(tmp_path, False, 40)
    print(f"\nshield on: {len(on.failures())}/300 failed ({on.estimate['summary']}); "
          f"shield off: {len(off.failures())}/40 failed")
    assert len(on.failures()) == 0 and on.estimate["ci_high"] < 0.02
    assert len(off.failures()) >= 20
    assert all(e["shield"] > 0 for e in on.episodes)  # the shield had to work in every episode
