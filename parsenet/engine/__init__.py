"""Training loop, evaluation, checkpoints and optimisation helpers."""
