"""Dataset loaders on real data and on tiny files of each official format, and their error messages."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from experiments.datasets import load_dataset, resolve_data_root
from experiments.errors import ConfigError, DatasetNotFoundError
from experiments.specs import DatasetSpec


def test_digits_is_real_uint8_with_a_fixed_stratified_split(digits):
    again = load_dataset("digits")
    assert digits.train_images.dtype == torch.uint8 and digits.train_images.shape[1:] == (1, 8, 8)
    assert digits.n_train + len(digits.test_labels) == 1797
    assert torch.equal(digits.test_labels, again.test_labels) and torch.equal(digits.train_images, again.train_images)
    share = torch.bincount(digits.test_labels, minlength=10) / torch.bincount(digits.train_labels, minlength=10)
    assert share.min() > 0.2 and share.max() < 0.3  # every class split 80/20
    assert digits.train_images.max() == 255


def test_real_cifar10_subset_loads_in_official_layout(cifar10_subset_root):
    data = load_dataset("cifar10", cifar10_subset_root)
    assert data.train_images.shape == (5085, 3, 32, 32) and data.test_images.shape == (1017, 3, 32, 32)
    assert data.class_names[0] == "airplane" and data.n_classes == 10
    assert torch.bincount(data.train_labels).min() > 400  # every class present


def _write_cifar100(folder, n_train=20, n_test=10):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": list(rng.integers(0, 100, n)),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))
    return batch


def test_cifar100_reads_the_official_pickles(tmp_path):
    test_batch = _write_cifar100(tmp_path / "cifar-100-python")
    data = load_dataset("cifar100", tmp_path)
    assert data.n_train == 20 and data.n_classes == 100 and data.class_names[5] == "c5"
    # row = R plane, G plane, B plane of a 32x32 image
    assert torch.equal(data.test_images[3, 1].flatten(), torch.from_numpy(test_batch["data"][3, 1024:2048]))


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "svhn"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for name, n in (("train_32x32.mat", 12), ("test_32x32.mat", 6)):
        arrays[name] = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # official layout [H, W, C, N]
        savemat(folder / name, {"X": arrays[name], "y": (np.arange(n) % 10 + 1).reshape(-1, 1)})  # labels 1..10
    data = load_dataset("svhn", tmp_path)
    assert data.train_images.shape == (12, 3, 32, 32)
    assert data.train_labels[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert torch.equal(data.train_images[2, 1], torch.from_numpy(arrays["train_32x32.mat"][:, :, 1, 2]))


def _write_class_folders(folder, classes=("a", "b", "c"), per_class=6, size=(40, 30)):
    from PIL import Image

    for c_index, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, (40 * c_index, 10 * i, 200)).save(folder / name / f"img_{i}.png")


def test_caltech101_resizes_drops_background_and_splits_by_seed(tmp_path):
    folder = tmp_path / "caltech101" / "101_ObjectCategories"
    _write_class_folders(folder, ("BACKGROUND_Google", "accordion", "airplanes"))
    spec = DatasetSpec(name="caltech101", image_size=16)
    data, again = load_dataset(spec, tmp_path), load_dataset(spec, tmp_path)
    other_seed = load_dataset(spec.model_copy(update={"split_seed": 1}), tmp_path)
    assert data.class_names == ("accordion", "airplanes") and data.image_shape == (3, 16, 16)
    assert data.n_train + len(data.test_labels) == 12 and len(data.test_labels) == 4  # 1/3 of each class
    assert data.split == again.split and data.split["test"] != other_seed.split["test"]


def test_imagefolder_uses_train_and_test_folders_when_present(tmp_path):
    _write_class_folders(tmp_path / "cdd" / "train", per_class=4)
    _write_class_folders(tmp_path / "cdd" / "test", per_class=2)
    data = load_dataset(DatasetSpec(name="imagefolder", path="cdd", image_size=8), tmp_path)
    assert data.n_train == 12 and len(data.test_labels) == 6 and data.n_classes == 3


def test_missing_dataset_names_dataset_path_files_and_source(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("cifar10", tmp_path)
    message = str(error.value)
    for part in (
        "cifar10",
        str(tmp_path / "cifar-10-batches-py"),
        "data_batch_1",
        "test_batch",
        "cifar-10-python.tar.gz",
    ):
        assert part in message


def test_partial_cifar10_lists_exactly_the_missing_files(tmp_path, cifar10_subset_root):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        (folder / name).symlink_to(cifar10_subset_root / "cifar-10-batches-py" / name)
    with pytest.raises(DatasetNotFoundError, match=r"missing: data_batch_3, data_batch_4, data_batch_5\)"):
        load_dataset("cifar10", tmp_path)


def test_missing_svhn_and_image_folder_say_where_they_looked(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train_32x32.mat"):
        load_dataset("svhn", tmp_path)
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "nope")):
        load_dataset(DatasetSpec(name="imagefolder", path="nope"), tmp_path)


def test_the_svhn_download_hint_names_the_real_folder_where_torchvision_imports(tmp_path, monkeypatch):
    import experiments.datasets.svhn as svhn

    monkeypatch.setattr(svhn, "torchvision_available", lambda: True)
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("svhn", tmp_path)
    message = str(error.value)
    assert message.count(f"SVHN('{tmp_path / 'svhn'}'") == 2 and "{root" not in message, message


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="dataset 'cifar11' is unknown; known: caltech101, cifar10"):
        load_dataset("cifar11")


def test_data_root_order_explicit_then_env_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("ALBENCH_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "cli") == tmp_path / "cli"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("ALBENCH_DATA_ROOT")
    assert str(resolve_data_root(None)).endswith("data") and "~" not in str(resolve_data_root(None))
