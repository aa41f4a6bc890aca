"""Runs trials: the round loop, checkpoints, result sinks and the command line."""
