"""Trainers, each read top to bottom (vision pre-training, SFT, GRPO, PPO with chain of
thought, SB3 baselines), sharing the run set-up, sampling and checkpoint code in `run.py`.
Progress goes to a callback the caller supplies (twin.core.progress.Progress)."""
