"""Backbones, the loss-prediction module and its ranking loss, batched augmentation."""

from __future__ import annotations

import torch

from models import LossPredictionModule, build_model, tap_channels
from models.augment import Normalizer, crop_and_flip, random_crop_and_flip
from models.loss_prediction import loss_prediction_loss


def test_resnet18_is_the_cifar_variant_with_the_reference_size():
    model = build_model("resnet18", 10, 3)
    out = model(torch.zeros(2, 3, 32, 32))
    assert out.logits.shape == (2, 10) and out.embedding.shape == (2, 512)
    assert [tuple(t.shape[1:]) for t in out.taps] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # ALGORITHMS.md: about 11.17 M for C = 10
    assert len(list(model.parameters())) == 62  # the 62 tensors on the loss path
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)  # 3x3 stem, no max-pool


def test_small_cnn_shares_the_interface_and_the_loss_module_fits_both():
    for name, shape in (("small_cnn", (1, 8, 8)), ("resnet18", (3, 32, 32))):
        model = build_model(name, 7, shape[0])
        module = LossPredictionModule(tap_channels(model, shape))
        out = model(torch.zeros(4, *shape))
        assert out.logits.shape == (4, 7) and len(out.taps) == 4
        assert module(out.taps).shape == (4,)


def test_ranking_loss_matches_the_ll4al_formula_by_hand():
    predicted = torch.tensor([0.5, 2.0, 1.0, 0.0])
    target = torch.tensor([3.0, 1.0, 1.0, 1.0])
    # pairs (0, 3): target diff +2 -> s=+1, pred diff 0.5 -> max(0, 1 - 0.5) = 0.5
    #       (1, 2): target diff 0 (tie) -> s=-1, pred diff 1.0 -> max(0, 1 + 1.0) = 2.0
    assert torch.isclose(loss_prediction_loss(predicted, target, margin=1.0), torch.tensor(1.25))
    # an odd batch leaves its middle sample out; one sample gives a zero loss
    assert torch.isclose(
        loss_prediction_loss(torch.tensor([0.5, 9.0, 0.0]), torch.tensor([3.0, 0.0, 1.0])), torch.tensor(0.5)
    )
    assert loss_prediction_loss(torch.tensor([1.0]), torch.tensor([1.0])) == 0


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
