"""Backbones (a registry), training and evaluation. Every backbone returns a `ModelOutput`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from experiments.errors import ConfigError
from models.outputs import ModelOutput
from models.resnet import ResNet18
from models.small_cnn import SmallCNN

MODELS: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet18": lambda n_classes, in_channels: ResNet18(n_classes, in_channels),
    "small_cnn": lambda n_classes, in_channels: SmallCNN(n_classes, in_channels),
}
MODEL_NAMES = tuple(sorted(MODELS))

__all__ = ["MODELS", "MODEL_NAMES", "ModelOutput", "build_model", "tap_channels"]


def build_model(name: str, n_classes: int, in_channels: int) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"model '{name}' is unknown; known: {', '.join(MODEL_NAMES)}")
    return MODELS[name](n_classes, in_channels)


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
