"""The 1:10 race car (F1TENTH): tracks, single-track dynamics, actuation, the PyBullet world
and the twin that joins them. Knows no reward, no guard and no controller."""
