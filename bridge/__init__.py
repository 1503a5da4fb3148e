"""ZeroMQ bridge to hardware and staged rollouts (not built yet: see the bridge issue)."""
