"""Shields, guards and constraint costs per world (`car/`, `factory/`), the verdict and cost
records they share, the PPO-Lagrangian multiplier, and the tamper-evident audit log
(`audit/`). Imports only `twin`."""
