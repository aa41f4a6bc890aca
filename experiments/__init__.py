"""Experiment definitions: datasets, their reference defaults, typed trial specs and grid files."""
