"""The training engine: state, step, loop, a run's lifecycle, checkpoints, families."""
