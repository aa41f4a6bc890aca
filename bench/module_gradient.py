"""What the loss-prediction module does to the backbone it is trained with, per model: the size and direction of
its gradient on the backbone against cross-entropy's, where that gradient lands, and how well the module ranks.

Usage: .venv/bin/python -m bench.module_gradient [--models small_cnn,resnet18] [--seeds 3] [--epochs 0,20]
                                                 [--threads 2] [--out module-gradient]
For each model and seed: the trial's initial weights and 200-label initial set of the CIFAR-10 subset (the
convergence pilot's round 0), trained jointly with the module (lplgrad's objective and CIFAR's 200-epoch schedule:
LR 0.1, the taps attached until epoch 120), stopped after each of --epochs to measure on 128 labeled images
(test-time views, train mode, as a training step sees them; on a copy, so the measurement changes nothing):
- |g_LPL| / |g_CE|: the norm of the backbone gradient of the module's term (weight x ranking loss) over that of
  cross-entropy's, for the whole backbone and for the parameters before each tap (the stages);
- cos(g_CE, g_LPL): their direction (0: the module pushes the backbone sideways to cross-entropy's descent);
- the module's ranking accuracy: the share of the batch's mirrored pairs (LL4AL's pairing) whose predicted losses
  are ordered as their cross-entropies are (0.5: chance).
Prints a table (mean ± std over seeds) and writes bench/results/<out>.md.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from bench.environment import CIFAR10_SUBSET, machine_header, write_result
from experiments.datasets import load_dataset
from experiments.defaults import DEFAULTS, resolve_train
from experiments.specs import DatasetSpec, RegimeSpec, TrialSpec
from models.augment import Normalizer
from models.networks import Networks
from models.ops import per_sample_cross_entropy
from models.training import train_round
from orchestrator.engine.streams import generator
from orchestrator.engine.trial import build_networks
from strategies import build_strategy, resolve_strategy
from strategies.loss_prediction import MODULE, loss_prediction_loss

N_LABELED, N_MEASURED = 200, 128


def stage_of(model: str, name: str) -> int | None:
    """Which tap's stage a backbone parameter belongs to (0-3; the stem counts with stage 0), None for the head."""
    if name.startswith("linear"):
        return None
    if model == "small_cnn":
        return int(name.split(".")[1])
    return 0 if name.startswith(("conv1", "bn1")) else int(name[len("layer")]) - 1


def measure(nets: Networks, model: str, x: torch.Tensor, y: torch.Tensor, margin: float, weight: float) -> dict:
    """The two gradients on the backbone and the module's ranking, on a copy of the networks."""
    nets = Networks(copy.deepcopy(nets.backbone), {MODULE: copy.deepcopy(nets.auxiliary[MODULE])})
    for module in nets.named().values():
        module.train()
    out = nets.backbone(x)
    per_sample = per_sample_cross_entropy(out.logits, y)  # [B]
    predicted = nets.auxiliary[MODULE](out.taps)  # [B]
    named = [(n, p) for n, p in nets.backbone.named_parameters()]
    params = [p for _, p in named]
    g_ce = torch.autograd.grad(per_sample.mean(), params, retain_graph=True)
    term = weight * loss_prediction_loss(predicted, per_sample, margin)
    g_lpl = torch.autograd.grad(term, params, allow_unused=True)
    g_lpl = [torch.zeros_like(p) if g is None else g for g, p in zip(g_lpl, params, strict=True)]
    flat_ce, flat_lpl = torch.cat([g.flatten() for g in g_ce]), torch.cat([g.flatten() for g in g_lpl])
    result = {
        "ratio": float(flat_lpl.norm() / flat_ce.norm()),
        "cos": float(torch.nn.functional.cosine_similarity(flat_ce, flat_lpl, dim=0)),
    }
    for stage in range(4):
        picked = [i for i, (n, _) in enumerate(named) if stage_of(model, n) == stage]
        ce = torch.cat([g_ce[i].flatten() for i in picked]).norm()
        lpl = torch.cat([g_lpl[i].flatten() for i in picked]).norm()
        result[f"ratio{stage + 1}"] = float(lpl / ce)
    n_pairs = len(predicted) // 2
    first, mirror = torch.arange(n_pairs), len(predicted) - 1 - torch.arange(n_pairs)
    agree = (predicted[first] - predicted[mirror]).sign() == (per_sample[first] - per_sample[mirror]).sign()
    result["ranking"] = float(agree.float().mean())
    return result


def run_seed(dataset, model: str, seed: int, stops: list[int]) -> list[dict]:
    """Trains one seed jointly up to each stop (cumulatively) and measures there."""
    reference = DEFAULTS["cifar10"].train
    train = resolve_train(reference, {"epochs": 200, "batch_size": 128})
    spec = TrialSpec(
        experiment="module-gradient",
        dataset=DatasetSpec(name="cifar10"),
        model=model,
        regime_name="pilot",
        regime=RegimeSpec(initial=N_LABELED, query=N_LABELED, budget=N_LABELED),
        strategy=resolve_strategy("lplgrad", {}, train, reference),
        seed=seed,
        train=train,
    )
    strategy = build_strategy(spec.strategy)
    nets = build_networks(spec, dataset, strategy, "cpu")
    normalize = Normalizer(dataset.mean, dataset.std)
    labeled = torch.randperm(dataset.n_train, generator=generator(seed, 0, "initial"))[:N_LABELED].sort().values
    x = normalize(dataset.train_images[labeled[:N_MEASURED]])
    y = dataset.train_labels[labeled[:N_MEASURED]]
    objective, settings = strategy.objective, strategy.settings
    rows, done = [], 0
    order, augment = generator(seed, 0, "order"), generator(seed, 0, "augment")
    for stop in stops:
        if stop > done:  # the schedule's epochs done..stop-1: LR and detach as the 200-epoch schedule has them
            part = train.model_copy(update={"epochs": stop - done, "lr_milestones": ()})
            train_round(nets, dataset.train_images, dataset.train_labels, labeled.numpy(), part, objective,
                        normalize, order, augment)  # fmt: skip
            done = stop
        rows.append({"epoch": stop, **measure(nets, model, x, y, settings.margin, settings.weight)})
    return rows


def _ms(values: list[float], percent: bool = False) -> str:
    scale = 100 if percent else 1
    mean, std = scale * np.mean(values), scale * (np.std(values, ddof=1) if len(values) > 1 else 0.0)
    return f"{mean:.2f} ± {std:.2f}" if not percent else f"{mean:.0f} ± {std:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="small_cnn,resnet18")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", default="0,20", help="measure after these many joint epochs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="module-gradient")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_dataset("cifar10", CIFAR10_SUBSET)
    stops = [int(e) for e in args.epochs.split(",")]
    lines = [
        f"# The loss-prediction module's gradient on the backbone ({machine_header(args.threads)})",
        "",
        f"Command: `python -m bench.module_gradient --models {args.models} --seeds {args.seeds} --epochs "
        f"{args.epochs} --threads {args.threads}`. CIFAR-10 subset, {N_LABELED} labels, joint training (lplgrad's "
        f"objective), measured on {N_MEASURED} labeled images; mean ± std over {args.seeds} seeds. Ratios are "
        "|g_LPL| / |g_CE| (%); stage i: the parameters before tap i.",
        "",
        "| model | joint epochs | ratio, backbone % | cos(g_CE, g_LPL) | stage 1 % | stage 2 % | stage 3 % | "
        "stage 4 % | module's ranking accuracy % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for model in args.models.split(","):
        runs = [run_seed(dataset, model, seed, stops) for seed in range(args.seeds)]
        for i, stop in enumerate(stops):
            at = [run[i] for run in runs]
            cells = [_ms([r[k] for r in at], percent=k != "cos") for k in
                     ("ratio", "cos", "ratio1", "ratio2", "ratio3", "ratio4", "ranking")]  # fmt: skip
            lines.append(f"| {model} | {stop} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    print(f"written to {write_result(args.out, chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
