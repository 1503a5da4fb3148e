"""What every package shares, at the bottom of the layers: the policy contracts (Observation,
Decision, Policy), config fields with bounds, the one randomization mechanism, sensor models,
the PyBullet client helper and the progress callback. Imports nothing of Shakedown's."""
