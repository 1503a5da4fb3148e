"""Car tasks: instructions, the instruction-following env (11 MPC parameters per episode),
the low-level drive env (speed, steering), and the drive metrics."""
