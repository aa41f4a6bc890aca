"""SVHN from the official cropped-digits files train_32x32.mat and test_32x32.mat (no 'extra' split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.datasets.base import Dataset, missing_dataset, torchvision_available

FILES = ("train_32x32.mat", "test_32x32.mat")
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    mat = loadmat(path)
    images = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)), dtype=np.uint8)  # [H, W, C, N] -> [N, C, H, W]
    labels = mat["y"].reshape(-1).astype(np.int64)
    labels[labels == 10] = 0  # the official files label the digit 0 as 10
    return images, labels


def load_svhn(root: Path) -> Dataset:
    """Looks in ROOT/svhn/ first, then ROOT/ itself (torchvision's SVHN keeps the files directly in its root)."""
    candidates = [root / "svhn", root]
    folder = next((c for c in candidates if all((c / f).is_file() for f in FILES)), None)
    if folder is None:
        how = (
            f"Download it with: python -c \"from torchvision.datasets import SVHN; SVHN('{root / 'svhn'}', "
            f"split='train', download=True); SVHN('{root / 'svhn'}', split='test', download=True)\"."
            if torchvision_available()
            else "Download http://ufldl.stanford.edu/housenumbers/train_32x32.mat and test_32x32.mat "
            f"into {root / 'svhn'}."
        )
        raise missing_dataset("svhn", candidates, f"files {FILES[0]} and {FILES[1]}", how)
    names = tuple(str(d) for d in range(10))
    return Dataset.from_arrays("svhn", _read(folder / FILES[0]), _read(folder / FILES[1]), names, SVHN_MEAN, SVHN_STD)
