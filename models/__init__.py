"""Backbones (a registry), training and evaluation. Every backbone returns a `ModelOutput`.

Besides albench's own, the registry holds the backbones other installed packages declare in the entry-point group
`albench.models` (`experiments.plugins`): each a callable (n_classes, in_channels) -> nn.Module."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from experiments.plugins import Plugin, PluginError, Registry
from models.outputs import ModelOutput
from models.resnet import ResNet18
from models.small_cnn import SmallCNN

MODELS: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet18": lambda n_classes, in_channels: ResNet18(n_classes, in_channels),
    "small_cnn": lambda n_classes, in_channels: SmallCNN(n_classes, in_channels),
}
MODEL_NAMES = tuple(sorted(MODELS))  # albench's own; `REGISTRY.names()` adds the plugins'

__all__ = ["MODELS", "MODEL_NAMES", "REGISTRY", "ModelOutput", "build_model", "tap_channels"]


def _model_builder(plugin: Plugin, found: object) -> Callable[[int, int], nn.Module]:
    if not callable(found):
        raise PluginError(
            f"model '{plugin.name}' (entry point '{plugin.entry_point}' of {plugin.provenance}) is {found!r}: "
            "it must be a callable (n_classes, in_channels) -> nn.Module, such as the module's class"
        )
    return found


REGISTRY: Registry[Callable[[int, int], nn.Module]] = Registry("model", MODELS, _model_builder)


def build_model(name: str, n_classes: int, in_channels: int, planned_with: str | None = None) -> nn.Module:
    """A fresh backbone. `planned_with`: a plugin's package and version as the trial's spec records them."""
    return REGISTRY.get(name, planned_with)(n_classes, in_channels)


def tap_channels(backbone: nn.Module, image_shape: tuple[int, int, int]) -> list[int]:
    """Channel counts of the four taps, read off one forward pass (so a tap-reading network fits any backbone)."""
    import torch

    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        probe = next(backbone.parameters()).new_zeros((1, *image_shape))
        channels = [t.shape[1] for t in backbone(probe).taps]
    backbone.train(was_training)
    return channels
