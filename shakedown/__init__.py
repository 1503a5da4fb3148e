"""Shakedown's command line and the jobs it runs (demo, reports); the parts live in
twin/, agents/, safety/, scenarios/ and bridge/."""
