"""The factory cell's robot side: the runtime (line control, the factory shield, watchdogs)
and the emulated cell."""
