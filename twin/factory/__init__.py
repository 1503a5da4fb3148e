"""The factory line: conveyor, parts with visible defects, Panda arm, a person, events, and
the twin that joins them. Knows no reward and no guard."""
