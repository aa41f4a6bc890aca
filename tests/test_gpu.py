"""On a CUDA device: per-sample gradient norms (the unfold path) against a one-sample loop, bf16 + channels-last
training, evaluation, a trial's GPU metrics, the deterministic mode, a trial that overruns its memory share, and a
round-0 group trained once on CUDA.

Skipped without CUDA (CI never has one); `python -m bench.gpu` runs them first on a GPU machine. Imports only
the core: the GPU machine's image has neither Ray nor MLflow.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from experiments.datasets import load_dataset
from models import build_model
from models.augment import Normalizer
from models.evaluation import evaluate
from models.networks import Networks
from models.objective import CROSS_ENTROPY
from models.training import train_round
from orchestrator.engine.trial import run_trial
from strategies.gradnorm import per_sample_grad_norms
from strategies.layer_norms import CONV_FORMS
from tests.conftest import REPO, tiny_spec
from tests.strategies.test_gradnorm import _with_running_stats, reference_loop

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (python -m bench.gpu runs these)"),
]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize(("model_name", "size", "n"), [("small_cnn", 16, 8), ("resnet18", 32, 4)])
@pytest.mark.parametrize("loss", ["entropy", "expected_ce"])
def test_per_sample_gradient_norms_on_cuda_match_a_one_sample_loop(model_name, size, n, loss):
    torch.manual_seed(0)
    model = _with_running_stats(build_model(model_name, 10, 3), (3, size, size)).cuda()
    x = torch.randn(n, 3, size, size, dtype=torch.float64, device="cuda")
    fast = per_sample_grad_norms(model, x, loss=loss, chunk_size=n // 2)
    assert fast.device.type == "cuda"
    torch.testing.assert_close(fast, reference_loop(model, x, loss), rtol=1e-6, atol=0)


def test_fp32_scores_on_cuda_agree_with_float64_on_the_cpu():
    torch.manual_seed(0)
    model = _with_running_stats(build_model("resnet18", 10, 3), (3, 32, 32))
    x = torch.randn(16, 3, 32, 32, dtype=torch.float64)
    exact = per_sample_grad_norms(model, x)
    on_gpu = per_sample_grad_norms(model.float().cuda(), x.float().cuda()).double().cpu()
    torch.testing.assert_close(on_gpu, exact, rtol=2e-3, atol=0)


@pytest.mark.parametrize("conv_form", CONV_FORMS)
def test_every_conv_form_in_fp32_on_cuda_agrees_with_float64_on_the_cpu(conv_form):
    """Each exact form forced on every ResNet-18 conv it applies to, within the default choice's tolerance."""
    torch.manual_seed(0)
    model = _with_running_stats(build_model("resnet18", 10, 3), (3, 32, 32))
    x = torch.randn(16, 3, 32, 32, dtype=torch.float64)
    exact = per_sample_grad_norms(model, x)
    on_gpu = per_sample_grad_norms(model.float().cuda(), x.float().cuda(), conv_form=conv_form)
    torch.testing.assert_close(on_gpu.double().cpu(), exact, rtol=2e-3, atol=0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_cuda_in_bf16_and_channels_last_fits_and_evaluates_as_on_the_cpu(digits, precision):
    spec = tiny_spec("random", epochs=40, precision=precision)
    torch.manual_seed(0)
    nets = Networks(build_model("small_cnn", 10, 1).cuda())
    images, labels = digits.train_images.cuda(), digits.train_labels.cuda()
    labeled = torch.arange(300).numpy()
    normalize = Normalizer(digits.mean, digits.std)
    stats = train_round(
        nets,
        images,
        labels,
        labeled,
        spec.train,
        CROSS_ENTROPY,
        normalize,
        torch.Generator().manual_seed(0),
        torch.Generator().manual_seed(1),
    )
    assert torch.isfinite(torch.tensor(stats.final_loss))
    conv = next(m for m in nets.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    fit = evaluate(nets.backbone, images[:300], labels[:300], normalize, 10)
    assert fit.accuracy > 0.95, f"{precision}: 40 epochs fit 300 digits"
    on_gpu = evaluate(nets.backbone, digits.test_images.cuda(), digits.test_labels.cuda(), normalize, 10)
    on_cpu = evaluate(nets.backbone.cpu(), digits.test_images, digits.test_labels, normalize, 10)
    assert abs(on_gpu.accuracy - on_cpu.accuracy) <= 0.01


def test_a_cuda_trial_records_its_gpu_use(digits):
    state = run_trial(tiny_spec("ent_gradnorm"), digits, device="cuda", max_rounds=2)
    for record in state.records:
        assert 0 < record.gpu_peak_allocated_mib <= record.gpu_peak_reserved_mib
        assert record.device == torch.cuda.get_device_name(0)
    try:
        import pynvml  # noqa: F401  (nvidia-ml-py)
    except ImportError:
        return
    assert all(0 <= r.gpu_utilization <= 100 for r in state.records)


@pytest.mark.parametrize("strategy", ["lplgrad", "badge"])
def test_the_deterministic_mode_repeats_a_cuda_trial_bit_for_bit(digits, strategy):
    spec = tiny_spec(strategy, deterministic=True, augment=True, crop_padding=1)
    first, second = (run_trial(spec, digits, device="cuda") for _ in range(2))
    assert [r.deterministic() for r in first.records] == [r.deterministic() for r in second.records]


def test_a_trial_over_its_memory_share_fails_naming_the_fix():
    code = textwrap.dedent(
        """
        import torch
        from experiments.datasets import load_dataset
        from orchestrator.engine.gpu import limit_memory, out_of_memory
        from orchestrator.engine.trial import run_trial
        from tests.conftest import tiny_spec

        limit_memory(0.0005, "cuda")
        spec = tiny_spec("ent_gradnorm")
        try:
            run_trial(spec, load_dataset("digits"), device="cuda")
        except torch.OutOfMemoryError as error:
            print(out_of_memory(error, 0.0005, 256, spec.train.batch_size))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "ran out of memory on its share of the GPU (resources.gpus_per_trial = 0.0005)" in done.stdout, (
        done.stdout + done.stderr
    )
    assert "fewer trials per GPU" in done.stdout


def test_on_cuda_a_round0_group_trains_round0_once_and_its_rows_are_identical(tmp_path):
    """With the default (non-deterministic) kernels: the group's members start from its one round-0 fit."""
    from experiments.results import read_rounds
    from orchestrator.plan.grid import parse_grid
    from orchestrator.run.local import run_grid_locally
    from orchestrator.store.bookkeeper import Bookkeeper

    grid = parse_grid(
        {
            "name": "cuda-round0",
            "datasets": ["digits"],
            "regimes": {"tiny": {"initial": 20, "query": 20, "subset": 200, "budget": 60}},
            "strategies": ["random", "entropy", "margin", "ent_gradnorm"],
            "seeds": [0],
            "train": {"epochs": 10},
            "resources": {"gpus_per_trial": 1, "cpus_per_trial": 1},
        }
    )
    lines = []
    run_grid_locally(grid, Bookkeeper(tmp_path, None), device="cuda", report=lines.append)
    rows = read_rounds(tmp_path)
    first = rows[rows["round"] == 0]
    assert sum("trained once" in line for line in lines) == 1 and len(first) == 4
    assert first["round0_group"].nunique() == 1
    assert len(first[["test_accuracy", "train_loss", "train_accuracy"]].drop_duplicates()) == 1
    assert (first["device"] == torch.cuda.get_device_name(0)).all()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_captured_step_trains_as_eager_does_with_one_graph_per_phase_and_batch_size(digits, precision):
    """lplgrad's joint objective across its detach and an LR milestone, with a tail batch, captured and eager."""
    from experiments.specs import StrategySpec, TrainSpec
    from models.captured import graph_keys, train_round_static
    from strategies import build_strategy
    from strategies.loss_prediction import MODULE, build_loss_module

    objective = build_strategy(StrategySpec(name="lplgrad", settings={"detach_epoch": 1})).objective
    train = TrainSpec(
        epochs=4, batch_size=32, lr=0.05, lr_milestones=(3,), crop_padding=1, precision=precision, step="captured"
    )
    images, labels = digits.train_images.cuda(), digits.train_labels.cuda()
    labeled = torch.arange(300).numpy()
    normalize = Normalizer(digits.mean, digits.std)
    runs = []
    for capture in (False, True):
        torch.manual_seed(0)
        backbone = build_model("small_cnn", 10, 1)
        nets = Networks(backbone.cuda(), {MODULE: build_loss_module(backbone, (1, 8, 8)).cuda()})
        streams = (torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
        if capture:
            loss, captures = train_round_static(
                nets, images, labels, labeled, train, objective, normalize, *streams, capture=True
            )
            assert captures == len(graph_keys(train, objective, 300)) == 4  # the LR milestone recaptured nothing
        else:
            eager = train.model_copy(update={"step": "eager"})
            loss = train_round(nets, images, labels, labeled, eager, objective, normalize, *streams).final_loss
        runs.append((loss, nets.weights()))
    (eager_loss, eager_weights), (captured_loss, captured_weights) = runs
    assert captured_loss == pytest.approx(eager_loss, rel=1e-2 if precision == "bf16" else 1e-3)
    for name, weights in eager_weights.items():
        for key, value in weights.items():
            if value.is_floating_point():
                torch.testing.assert_close(captured_weights[name][key], value, rtol=5e-2, atol=5e-3, msg=key)


def test_auto_scoring_chunks_grow_to_the_memory_and_score_as_fixed_chunks_do():
    import numpy as np

    from strategies import build_strategy
    from strategies.base import ScoringInputs

    torch.manual_seed(0)
    model = build_model("resnet18", 10, 3).cuda().eval()
    images = torch.randint(0, 256, (3000, 3, 32, 32), dtype=torch.uint8, device="cuda")
    inputs = ScoringInputs(model, images, np.arange(3000), Normalizer((0.5,) * 3, (0.25,) * 3), 256, 0)
    grown = ScoringInputs(model, images, np.arange(3000), Normalizer((0.5,) * 3, (0.25,) * 3), 256, 0, grow_chunks=True)
    sizes = [len(x) for _, x in grown.batches()]
    assert sizes[0] == 256 and max(sizes) > 256, sizes
    strategy = build_strategy("ent_gradnorm")
    fixed, auto = strategy.score(inputs).scores, strategy.score(grown).scores
    np.testing.assert_allclose(auto, fixed, rtol=1e-4)
