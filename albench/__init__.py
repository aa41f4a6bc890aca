"""albench: a Ray-distributed orchestrator for deep active-learning benchmarks.

`albench.api` is the public extension API: what a package of your own imports to add a strategy, a model or a
dataset that grids name like albench's own (`docs/plugins.md`). The rest of albench's modules may change.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("albench")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"
