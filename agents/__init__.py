"""Policies, controllers, tasks and (later) the VLM agent and its trainers."""
