"""Runs grids: their expansion to trials, the round loop, checkpoints, the bookkeeper, the runners and the CLI."""
