"""Backbones and batched augmentation."""

from __future__ import annotations

import torch

from models import build_model, tap_channels
from models.augment import Normalizer, crop_and_flip, random_crop_and_flip


def test_resnet18_is_the_cifar_variant_with_the_reference_size():
    model = build_model("resnet18", 10, 3)
    out = model(torch.zeros(2, 3, 32, 32))
    assert out.logits.shape == (2, 10) and out.embedding.shape == (2, 512)
    assert [tuple(t.shape[1:]) for t in out.taps] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # ALGORITHMS.md: about 11.17 M for C = 10
    assert len(list(model.parameters())) == 62  # the 62 tensors on the loss path
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)  # 3x3 stem, no max-pool


def test_small_cnn_shares_the_interface_and_reports_its_tap_channels():
    for name, shape, channels in (("small_cnn", (1, 8, 8), [32, 64, 128, 256]), ("resnet18", (3, 32, 32), None)):
        model = build_model(name, 7, shape[0])
        out = model(torch.zeros(4, *shape))
        assert out.logits.shape == (4, 7) and len(out.taps) == 4
        assert tap_channels(model, shape) == [t.shape[1] for t in out.taps] == (channels or [64, 128, 256, 512])


def test_crop_and_flip_moves_pixels_as_specified():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    shifted = crop_and_flip(image, torch.tensor([[3, 4]]), torch.tensor([False]), padding=2)
    # window at (3, 4) of the 2-padded image = shift up by 1 and left by 2, zeros filling in
    assert shifted[0, 0, 0].tolist() == [6, 7, 0, 0] and shifted[0, 0, 3].tolist() == [0, 0, 0, 0]
    flipped = crop_and_flip(image, torch.tensor([[1, 1]]), torch.tensor([True]), padding=1)
    assert torch.equal(flipped, image.flip(3))


def test_random_augmentation_is_reproducible_from_its_generator():
    images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    a = random_crop_and_flip(images, 2, True, torch.Generator().manual_seed(1))
    b = random_crop_and_flip(images, 2, True, torch.Generator().manual_seed(1))
    c = random_crop_and_flip(images, 2, True, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.uint8


def test_normalizer_maps_uint8_to_standardised_float():
    x = Normalizer((0.5,), (0.25,))(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    assert torch.allclose(x, torch.tensor([[[[-2.0, 2.0]]]]))
