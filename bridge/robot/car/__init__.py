"""The car's robot side: the `CarRobot` adapter protocol, the runtime (MPC, shield, watchdogs)
and the emulated car."""
