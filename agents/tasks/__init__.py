"""Gymnasium envs that join a twin, a safety guard and a controller into a task, with named
reward and cost terms, and each world's metrics. One folder per world."""
