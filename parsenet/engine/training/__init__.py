"""The training loop and what only it uses: settings, assembly of a run, optimiser and schedule,
loss, checkpoint rotation, validation, logs and the faults a long run must survive."""
