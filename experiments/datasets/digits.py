"""scikit-learn's bundled 8x8 handwritten digits: the embedded default, real data that ships with a package."""

from __future__ import annotations

import numpy as np
import torch

from experiments.datasets.base import Dataset, normalisation_of, seeded_stratified_split

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_dataset() -> Dataset:
    """1,797 real 8x8 grey images (values 0..16 rescaled to 0..255), split 80/20 per class with a fixed seed."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [N, 1, 8, 8]
    labels = bunch.target.astype(np.int64)
    train, test = seeded_stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    train_images = torch.from_numpy(images[train])
    mean, std = normalisation_of(train_images)
    return Dataset(
        name="digits",
        train_images=train_images,
        train_labels=torch.from_numpy(labels[train]),
        test_images=torch.from_numpy(images[test]),
        test_labels=torch.from_numpy(labels[test]),
        class_names=tuple(str(d) for d in range(10)),
        mean=mean,
        std=std,
    )
