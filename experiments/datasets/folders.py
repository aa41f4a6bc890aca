"""Class-per-folder image sets: Caltech-101 and any image folder (such as the paper's CDD).

Images are decoded with Pillow, converted to RGB and resized to a square `image_size`, because the whole
pool must be one uint8 tensor. Without a test folder the split is a seeded stratified one; its file lists
travel with the dataset (`Dataset.split`) so a run can store exactly which images were tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from experiments.datasets.base import Dataset, missing_dataset, normalisation_of, seeded_stratified_split

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp"}
CALTECH_EXCLUDED = {"BACKGROUND_Google"}  # the clutter class; the 101 object categories remain


def list_class_folders(folder: Path, excluded: set[str] = frozenset()) -> dict[str, list[Path]]:
    """Sorted class names mapped to their sorted image files (sorting makes the split reproducible)."""
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in excluded):
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            classes[sub.name] = files
    return classes


def decode_images(files: list[Path], image_size: int) -> np.ndarray:
    """uint8 [N, 3, S, S]: each file as RGB, resized with bilinear filtering."""
    from PIL import Image

    out = np.empty((len(files), 3, image_size, image_size), dtype=np.uint8)
    for i, path in enumerate(files):
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        out[i] = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    return out


def _flatten(classes: dict[str, list[Path]], names: list[str]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for label, name in enumerate(names):
        files += classes.get(name, [])
        labels += [label] * len(classes.get(name, []))
    return files, np.asarray(labels, dtype=np.int64)


def load_class_folders(
    name: str,
    folder: Path,
    image_size: int,
    test_fraction: float,
    split_seed: int,
    how_to_get: str,
    excluded: set[str] = frozenset(),
) -> Dataset:
    """FOLDER/train/<class>/ + FOLDER/test/<class>/ when both exist, else FOLDER/<class>/ split by seed."""
    if not folder.is_dir():
        raise missing_dataset(
            name, folder, "one sub-folder of images per class (or train/ and test/ holding them)", how_to_get
        )
    train_dir, test_dir = folder / "train", folder / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        train_classes, test_classes = (
            list_class_folders(train_dir, excluded),
            list_class_folders(test_dir, excluded),
        )
        names = sorted(set(train_classes) | set(test_classes))
        train_files, train_labels = _flatten(train_classes, names)
        test_files, test_labels = _flatten(test_classes, names)
    else:
        classes = list_class_folders(folder, excluded)
        names = sorted(classes)
        files, labels = _flatten(classes, names)
        if len(files) == 0:
            raise missing_dataset(
                name,
                folder,
                "image files (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ") in per-class sub-folders",
                how_to_get,
            )
        train_pos, test_pos = seeded_stratified_split(labels, test_fraction, split_seed)
        train_files, train_labels = [files[i] for i in train_pos], labels[train_pos]
        test_files, test_labels = [files[i] for i in test_pos], labels[test_pos]
    if len(train_files) == 0 or len(test_files) == 0:
        raise missing_dataset(name, folder, "images in both the train and the test part", how_to_get)
    train_images = torch.from_numpy(decode_images(train_files, image_size))
    mean, std = normalisation_of(train_images)
    return Dataset(
        name=name,
        train_images=train_images,
        train_labels=torch.from_numpy(train_labels),
        test_images=torch.from_numpy(decode_images(test_files, image_size)),
        test_labels=torch.from_numpy(test_labels),
        class_names=tuple(names),
        mean=mean,
        std=std,
        split={
            "train": [str(f.relative_to(folder)) for f in train_files],
            "test": [str(f.relative_to(folder)) for f in test_files],
        },
    )


def load_caltech101(root: Path, image_size: int, test_fraction: float, split_seed: int) -> Dataset:
    """ROOT/caltech101/101_ObjectCategories/ (torchvision's layout), without the background class."""
    folder = root / "caltech101" / "101_ObjectCategories"
    how = (
        "Download https://data.caltech.edu/records/mzrjq-6wc02 (caltech-101.zip), extract "
        f"101_ObjectCategories.tar.gz and place 101_ObjectCategories/ in {root / 'caltech101'}."
    )
    return load_class_folders("caltech101", folder, image_size, test_fraction, split_seed, how, CALTECH_EXCLUDED)


def load_image_folder(root: Path, path: str, image_size: int, test_fraction: float, split_seed: int) -> Dataset:
    """An arbitrary class-per-folder set; a relative `path` is taken under the data root."""
    folder = Path(path).expanduser()
    folder = folder if folder.is_absolute() else root / folder
    how = "Place one sub-folder per class there (e.g. the CDD images), optionally under train/ and test/."
    return load_class_folders("imagefolder", folder, image_size, test_fraction, split_seed, how)
