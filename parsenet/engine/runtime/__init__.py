"""Runtime plumbing shared by training, evaluation and prediction: the process (seeds,
determinism, device), memory format, mixed precision, checkpoints and torchrun."""
