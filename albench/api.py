"""The public extension API: everything a plugin package needs, and nothing else. Stable: a name here changes
only with a new `API_VERSION` (and a note in `docs/plugins.md`); what is not here may change in any release.

A plugin package declares its objects as entry points (`experiments.plugins` finds them), in its pyproject.toml:

    [project.entry-points."albench.strategies"]
    bald = "albench_bald.strategy:BaldStrategy"      # a Strategy subclass whose name is 'bald'
    [project.entry-points."albench.models"]
    mc_cnn = "albench_bald.model:McDropoutCNN"       # a callable (n_classes, in_channels) -> nn.Module
    [project.entry-points."albench.datasets"]
    my_data = "my_package.data:MY_DATA"              # a DatasetPlugin

The strategy protocol (`Strategy`): for a round, albench calls

    candidates = strategy.candidates(subset, labeled)            # pool indices to map over (default: the subset)
    strategy   = strategy.prepare(make_inputs, candidates, key)   # state every shard shares (default: none)
    partials   = [strategy.reduce(strategy.score(inputs), b) for inputs in shards]   # on any process
    picks      = strategy.select(merge_shards(partials), b, labeled, key)            # exactly b pool indices

`score` is the only method a strategy must write: a `ShardResult` with one finite score per image (higher is
queried first) or one feature row per image. Its settings are a `StrategySettings` subclass (typed, frozen,
with defaults that reproduce the method); what it trains is its `objective` and `auxiliary_networks`.
A backbone returns a `ModelOutput` (logits, the penultimate embedding, four taps). A dataset loader returns a
`Dataset` of uint8 images and int64 labels.
"""

from experiments.datasets.base import Dataset, DatasetPlugin
from experiments.errors import AlbenchError, ConfigError
from experiments.specs import TrainSpec
from models.networks import Networks
from models.objective import CROSS_ENTROPY, Objective
from models.outputs import ModelOutput
from strategies.base import NetworkBuilder, ScoringInputs, ShardResult, Strategy, merge_shards, top_b
from strategies.forward import eval_mode, map_outputs
from strategies.settings import StrategySettings
from strategies.views import uniform_hash as seeded_uniform

API_VERSION = 1

__all__ = [
    "API_VERSION",
    # strategies
    "Strategy",
    "StrategySettings",
    "ScoringInputs",
    "ShardResult",
    "top_b",
    "merge_shards",
    "map_outputs",
    "eval_mode",
    "seeded_uniform",
    # what a strategy trains
    "Objective",
    "CROSS_ENTROPY",
    "Networks",
    "NetworkBuilder",
    # backbones
    "ModelOutput",
    # datasets
    "Dataset",
    "DatasetPlugin",
    "TrainSpec",
    # errors a plugin raises for bad input
    "AlbenchError",
    "ConfigError",
]
