"""Training throughput of albench's trainer against the reference pipeline, and the accuracy both reach.

Usage: .venv/bin/python -m bench.train [--threads 2] [--labeled 1000] [--epochs 15] [--seeds 5]
The reference feeds training as the public code does: a torch DataLoader over the labeled subset whose
dataset applies per-image transforms to PIL images (zero-pad-4 random crop, horizontal flip, to-tensor,
normalise), single process (the public code's default), batches copied to the device. albench keeps the
uint8 pool on the device and crops, flips and normalises whole batches there (`models/training.py`).
Same model, optimiser, batch size, epochs, LR schedule and labeled set; images/s counts training images.
albench trains channels-last; the `albench-bf16` row adds bf16 autocast (the `train.precision: bf16` setting),
fast where the device has bf16 units (AMX on recent Xeons, tensor cores on GPUs).
Writes bench/results/train.md.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.environment import CIFAR10_SUBSET, machine_header, write_result
from experiments.defaults import DEFAULTS, resolve_train
from models import build_model
from models.augment import Normalizer
from models.evaluation import evaluate
from models.networks import Networks
from models.objective import CROSS_ENTROPY
from models.training import _optimizer, lr_at, train_round


class PerImageDataset(torch.utils.data.Dataset):
    """The reference's dataset: one PIL image at a time through crop, flip, to-tensor and normalise."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, padding: int, seed: int) -> None:
        self.images, self.labels, self.padding = images, labels, padding
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.images[i])  # HWC uint8, as torchvision's CIFAR10 hands it over
        p = self.padding
        padded = Image.new(image.mode, (image.width + 2 * p, image.height + 2 * p))
        padded.paste(image, (p, p))
        dy, dx = self.rng.integers(0, 2 * p + 1, size=2)
        image = padded.crop((dx, dy, dx + image.width, dy + image.height))
        if self.rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
        return (x - self.mean) / self.std, int(self.labels[i])


def reference_train(nets: Networks, dataset: PerImageDataset, train, device: str, seed: int) -> None:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=train.batch_size,
        shuffle=True,
        num_workers=0,
        pin_memory=device == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )
    optimizer = _optimizer(nets, train, CROSS_ENTROPY)
    nets.backbone.train()
    for epoch in range(train.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch, train)
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(nets.backbone(x).logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def run(model_name: str, path: str, data, labeled: np.ndarray, train, device: str, seed: int) -> tuple[float, float]:
    """(training images/s, test accuracy) of one seed on one path: 'reference', or 'albench' with any of the
    suffixes '-captured' (the `train.step: captured` setting, CUDA only) and '-bf16', e.g. 'albench-captured-bf16'."""
    torch.manual_seed(seed)
    nets = Networks(build_model(model_name, 10, 3).to(device))
    normalize = Normalizer(data.mean, data.std)
    images, labels = data.train_images.to(device), data.train_labels.to(device)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if path == "reference":
        hwc = data.train_images[labeled].permute(0, 2, 3, 1).numpy()
        dataset = PerImageDataset(hwc, data.train_labels[labeled].numpy(), data.mean, data.std, 4, seed)
        reference_train(nets, dataset, train, device, seed)
    else:
        spec = train.model_copy(
            update={
                "precision": "bf16" if path.endswith("bf16") else "fp32",
                "step": "captured" if "-captured" in path else "eager",
            }
        )
        order, augment = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
        train_round(nets, images, labels, labeled, spec, CROSS_ENTROPY, normalize, order, augment)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    accuracy = evaluate(nets.backbone, data.test_images.to(device), data.test_labels.to(device), normalize, 10).accuracy
    return len(labeled) * train.epochs / seconds, accuracy


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--labeled", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--models", default="small_cnn,resnet18")
    parser.add_argument("--resnet18-epochs", type=int, default=3, help="ResNet-18 is ~20x slower per image on a CPU")
    parser.add_argument("--resnet18-seeds", type=int, default=3, help="seeds for the ResNet-18 on a CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not CIFAR10_SUBSET.exists():
        sys.exit(f"the real CIFAR-10 subset is not at {CIFAR10_SUBSET}: this benchmark needs it")
    from experiments.datasets import load_dataset

    data = load_dataset("cifar10", CIFAR10_SUBSET)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def train_for(model_name: str):
        epochs = args.resnet18_epochs if model_name == "resnet18" and device == "cpu" else args.epochs
        return resolve_train(DEFAULTS["cifar10"].train, {"epochs": epochs, "batch_size": args.batch})

    labeled = np.sort(np.random.default_rng(0).permutation(data.n_train)[: args.labeled])
    paths = ["reference", "albench", "albench-bf16"]
    lines = [f"# Training throughput ({machine_header(args.threads)})", ""]

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    emit(
        f"{args.labeled} labeled CIFAR-10 subset images, batch {args.batch}, {device}, epochs as listed. Each seed "
        f"runs the three paths back to back (the machine's speed drifts over minutes); images/s is the median "
        f"over the seeds ({args.seeds}; ResNet-18 on a CPU {args.resnet18_seeds}) and the speed-up the median "
        "of the per-seed ratios (range in brackets). "
        "Accuracy on the 1,017 test images is mean ± std over the seeds; 'within spread' means the gap to the "
        "reference's mean is no larger than the larger of the two standard deviations."
    )
    emit("")
    emit("| model | epochs | path | images/s | speed-up vs reference | test accuracy % | gap to reference "
         "| within spread |")  # fmt: skip
    emit("|---|---:|---|---:|---:|---:|---:|---|")
    for model_name in args.models.split(","):
        train = train_for(model_name)
        rows = {path: [] for path in paths}
        seeds = args.resnet18_seeds if model_name == "resnet18" and device == "cpu" else args.seeds
        for seed in range(seeds):
            for path in paths:
                rows[path].append(run(model_name, path, data, labeled, train, device, seed))
        reference_rates = np.array([r for r, _ in rows["reference"]])
        reference_acc = np.array([a for _, a in rows["reference"]]) * 100
        for path in paths:
            rates = np.array([r for r, _ in rows[path]])
            ratios = rates / reference_rates
            acc = np.array([a for _, a in rows[path]]) * 100
            spread = max(_std(acc), _std(reference_acc))
            gap = acc.mean() - reference_acc.mean()
            emit(
                f"| {model_name} | {train.epochs} | {path} | {np.median(rates):.0f} | {np.median(ratios):.2f}x "
                f"[{ratios.min():.2f}-{ratios.max():.2f}] | {acc.mean():.1f} ± {_std(acc):.1f} | {gap:+.1f} | "
                f"{'yes' if abs(gap) <= spread else 'no'} |"
            )
    print(f"written to {write_result('train', chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
