"""Factory tasks: part inspection and line control envs, and the cell's metrics."""
