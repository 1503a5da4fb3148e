"""Staged rollouts: a candidate policy climbs sim -> shadow -> guarded -> canary -> full, each rung
gated by measured metrics, every promotion, pause and rollback signed into an audit log.

`plan` reads and validates a rollout plan; `metrics` measures a rung; `gates` judges it;
`watch` holds the policies a rung serves (the shadow pair, the watched candidate); `session`
runs one rung over the bridge against the emulator; `record` is the signed log and the state
read back from it alone; `ladder` runs the rungs and takes the operator's decisions.
"""
