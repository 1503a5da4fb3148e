"""The tower probe (benchmarks/tower_probe.py): its linear probe finds a label the features carry and does not
find one they do not, so a low score means the tower lost the defect, not that the probe failed."""

import numpy as np
import torch

from benchmarks.tower_probe import probe_correct


def test_the_probe_reads_a_linearly_coded_label_and_scores_chance_on_noise():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(600, 32))).float()
    y = (x[:, 3] - 0.5 * x[:, 7] > 0).numpy().astype(np.int64)
    correct = probe_correct(x[:400], y[:400], x[400:], y[400:])
    assert correct.shape == (200,) and correct.mean() > 0.95
    noise = rng.integers(0, 2, 600)
    assert 0.35 < probe_correct(x[:400], noise[:400], x[400:], noise[400:]).mean() < 0.65
