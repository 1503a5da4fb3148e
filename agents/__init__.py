"""Everything that decides: control (MPC), policies (experts, heuristics, SB3), the VLM
agent, tasks (envs joining twin + guard), training and evaluation. Imports twin and safety."""
