"""The robot side of the bridge, one folder per world; `gate.py` holds what both share: the age
watchdog on decisions, the silence watchdog on the link, and the robot's audit record."""
