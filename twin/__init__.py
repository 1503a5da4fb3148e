"""Digital twins: the shared contracts in `core/`, one folder per world (`car/`, `factory/`).
The bottom layer: imports nothing else of Shakedown's."""
