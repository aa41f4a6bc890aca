"""Test accuracy and per-class accuracy of a backbone, batched, in eval mode."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.augment import Normalizer


@dataclass(frozen=True)
class Evaluation:
    accuracy: float  # fraction in [0, 1]
    per_class_accuracy: tuple[float, ...]  # NaN for a class absent from the test set


@torch.no_grad()
def predict(backbone: nn.Module, images: torch.Tensor, normalize: Normalizer, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels [N] of uint8 images, model left in the mode it was in."""
    was_training = backbone.training
    backbone.eval()
    predictions = [
        backbone(normalize(images[i : i + batch_size])).logits.argmax(1) for i in range(0, len(images), batch_size)
    ]
    backbone.train(was_training)
    return torch.cat(predictions)


def evaluate(
    backbone: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalize: Normalizer, n_classes: int
) -> Evaluation:
    # counted on the CPU: exact either way, and CUDA's weighted bincount is refused in the deterministic mode
    correct = (predict(backbone, images, normalize) == labels).to(torch.float64).cpu()
    labels = labels.cpu()
    per_class_total = torch.bincount(labels, minlength=n_classes).to(torch.float64)
    per_class_correct = torch.bincount(labels, weights=correct, minlength=n_classes)
    per_class = (per_class_correct / per_class_total).tolist()  # NaN where a class has no test images
    return Evaluation(accuracy=float(correct.mean()), per_class_accuracy=tuple(per_class))
