"""Digital twins: worlds, sensors, randomization and gymnasium envs."""
