"""Which exact form computes a conv's per-sample gradient norm (strategies.layer_norms), by a cost model.

Every form gives the same number; their work differs by orders of magnitude with the layer's shape. The choice is
a pure function of (conv geometry, batch, device type), never a timing: on the CPU a trial's scores must not
depend on a noisy measurement (a resumed trial reproduces the uninterrupted one bit for bit).

The model, per form: floating-point operations, bytes moved through memory, and kernel calls, from the shapes
alone (`form_cost`); a device turns them into seconds as a roofline, max(FLOPs / peak, bytes / bandwidth) +
calls x launch latency (`DeviceModel.seconds`). Among the forms of the cheapest *family* (the Gram forms, which
never build a per-sample gradient, against the per-sample ones) the model picks the cheapest; between the
per-sample implementations, whose FLOPs are equal, a device's measured preference decides where the roofline
cannot see kernel efficiency (`DeviceModel.per_sample`).

bench/gradnorm.py times every form of every conv of the benchmark models side by side and marks the one this
rule picks, so the rule is checked wherever the bench runs (on a GPU: `python -m bench.gpu`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from strategies.layer_norms import CONV_FORMS, GRAM_FORMS, ConvForm, ConvGeometry


@dataclass(frozen=True)
class Cost:
    """One call's work for a batch: floating-point operations, bytes through memory, kernel launches."""

    flops: float
    bytes: float
    calls: int
    gathered: float = 0.0  # floats an im2col (F.unfold) writes: a gather, far slower than a copy on the CPU
    reduction: int = 1 << 30  # the length of the sums its main product runs (a short one runs below peak)


def form_cost(geometry: ConvGeometry, form: ConvForm, batch: int, element_bytes: int = 4) -> Cost:
    """The work of `form` on a batch, counted from the shapes (a multiply-add is 2 FLOPs)."""
    g = geometry
    t, d, c_out, kk = g.positions, g.patch, g.c_out, g.kernel[0] * g.kernel[1]
    a_in = g.c_in * g.in_size[0] * g.in_size[1]
    padded = g.c_in * g.padded_positions
    g_out = c_out * t
    per_sample = 2 * t * d * c_out  # G_i^T A_i: every per-sample form does these products
    gram_out = 2 * t * t * c_out + 2 * t * t  # G_i G_i^T and the elementwise product's sum
    gathered = d * t if form in ("gram_unfold", "per_sample_unfold") else 0
    if form == "gram_shift" and g.stride != (1, 1):  # its k^2 slices of P step over elements: read one by one
        gathered = kk * t * t
    # a per-sample weight gradient's product sums over the T positions, short for late layers (the Gram forms'
    # products sum over the patch or the channels: hundreds, at peak)
    reduction = t if form.startswith("per_sample") else 1 << 30
    if form == "gram_unfold":  # unfold write + read twice (both bmm operands), two T x T Grams written and read
        flops, floats, calls = 2 * t * t * d + gram_out, a_in + 3 * d * t + g_out + 4 * t * t, 6
    elif form == "gram_shift":  # padded input, its channel Gram P, k^2 strided T x T slices summed in place
        p = g.padded_positions
        flops = 2 * p * p * g.c_in + kk * t * t + gram_out
        floats, calls = a_in + 2 * padded + p * p + 3 * kk * t * t + g_out + 4 * t * t, 6 + 2 * kk
    elif form == "per_sample_unfold":  # unfold write + read, per-sample gradients written and read
        flops, floats, calls = per_sample, a_in + 2 * d * t + g_out + 2 * c_out * d, 4
    elif form == "per_sample_grouped":  # the weight expanded B times, per-sample gradients written and read
        flops, floats, calls = per_sample, 2 * padded + g_out + 3 * c_out * d, 5
    elif form == "per_sample_loop":  # a weight-gradient call, a square and a sum per sample
        floats = 2 * padded + g_out + 2 * c_out * d
        return Cost(batch * per_sample, batch * floats * element_bytes, 3 * batch + 1, 0.0, reduction)
    elif form == "per_sample_func":  # vmap's batching rule: the grouped call plus its reshapes and copies
        flops, floats, calls = per_sample, 2 * padded + 2 * g_out + 5 * c_out * d, 12
    else:
        raise ValueError(f"unknown conv form {form!r}; known: {', '.join(CONV_FORMS)}")
    return Cost(batch * flops, batch * floats * element_bytes, calls, batch * gathered, reduction)


# On this project's 2-core Intel Xeon (bench/results/gradnorm.md, layers in 32-sample slices as the pass runs
# them), a call per sample's time over the grouped call's at batch 64 / 256: 64->64 3x3 1.14 / 1.19, 64->128 3x3
# stride 2 (73,728 weights) 1.26 / 1.22, 128->128 3x3 (147,456) 1.03 / 1.01, 128->256 3x3 stride 2 (294,912)
# 0.31 / 0.34: oneDNN's grouped weight gradient loses to a call per sample once a sample's weight gradient is
# large. FLOPs and bytes are the same for both, so the roofline cannot see it: a measured threshold, between
# the last two. (Measured on whole 256-sample batches, before the slices, the crossing was lower: 65,536.)
PER_SAMPLE_CALL_MIN_WEIGHT = 131_072


def _cpu_per_sample(geometry: ConvGeometry) -> ConvForm:
    return "per_sample_loop" if geometry.weights >= PER_SAMPLE_CALL_MIN_WEIGHT else "per_sample_grouped"


def _gpu_per_sample(geometry: ConvGeometry) -> ConvForm:
    """One batched product over the unfolded input: one large GEMM-like kernel, the form the H200 run of
    2026-12-04 used. The grouped call moves fewer bytes, but cuDNN's speed with B groups is not known until
    bench.gpu measures it; it stays a form to force and to time."""
    return "per_sample_unfold"


@dataclass(frozen=True)
class DeviceModel:
    """A device's roofline: peak fp32 FLOP/s, memory bandwidth, launch latency, and its per-sample preference."""

    name: str
    flops_per_s: float
    bytes_per_s: float
    launch_s: float
    per_sample: Callable[[ConvGeometry], ConvForm]
    layer_batch: int | None  # samples per layer computation (a cache-sized working set); None: the whole chunk
    gather_s: float = 0.0  # seconds per float an im2col writes, beyond its bytes (0: a bandwidth-bound kernel)
    full_reduction: int = 1  # sums shorter than this run at peak x their length / this

    def seconds(self, cost: Cost) -> float:
        peak = self.flops_per_s * min(1.0, cost.reduction / self.full_reduction)
        roofline = max(cost.flops / peak, cost.bytes / self.bytes_per_s)
        return roofline + cost.calls * self.launch_s + cost.gathered * self.gather_s


DEVICES = {
    # Measured here (2 cores, torch 2.13): a [64, 128, 1152] x [64, 1152, 256] bmm at 293 GFLOP/s, a 4-32 MiB copy
    # at 53-57 GB/s (a conv's per-sample working set is a few MiB), an op call ~10 us.
    # A layer's norms are computed 32 samples at a time: at batch 256, per form, slices of 8-64 samples ran within
    # 10 % of each other and the whole 256 up to 2x slower (gram_shift 128->128 on 16x16: 82-90 ms against 168;
    # the grouped 64->64 on 32x32: 81-84 against 164), their temporaries having left the cache.
    # F.unfold of 32 samples, the 11 ResNet-18 conv geometries on 32x32: 0.68-1.72 ns per float it writes (median
    # 1.24), 15x what its bytes take at the copy bandwidth: it gathers element by element. gram_shift's k^2 slices
    # of P, stride 2 (64->128 on 16x16, 32 samples): 1.4 ns per float added at 2 threads, 1.9 at 1, the same
    # gather; with stride 1 they are read in rows and cost their bytes.
    # A per-sample weight gradient sums over the T positions: at T = 64 its grouped call ran at 79-82 GFLOP/s
    # (128->256 1x1 and 64->128 3x3, both stride 2 on 16x16), at T = 256-1024 at 135-178, at T = 16 at 7-31:
    # peak x T / 256 fits the short ones (75 and 19 GFLOP/s). The Gram forms' sums run over the patch or the
    # channels, hundreds long: counted at peak.
    "cpu": DeviceModel("2-core x86 CPU", 3.0e11, 5.0e10, 1.0e-5, _cpu_per_sample, 32, 1.2e-9, 256),
    # NVIDIA's H200 SXM datasheet: 67 TFLOP/s fp32 (no tensor cores), 4.8 TB/s HBM3e; ~5 us a kernel launch.
    "cuda": DeviceModel("H200", 67e12, 4.8e12, 5.0e-6, _gpu_per_sample, None),
}


def device_model(device_type: str) -> DeviceModel:
    """The CPU's model for anything that is not CUDA (mps and others are not tuned: they get the CPU's rule)."""
    return DEVICES["cuda" if device_type == "cuda" else "cpu"]


def candidates(geometry: ConvGeometry, device_type: str) -> tuple[ConvForm, ...]:
    """The forms the rule weighs on this device: the Gram forms (groups = 1 only) and the device's per-sample one."""
    grams = tuple(f for f in CONV_FORMS if f in GRAM_FORMS) if geometry.groups == 1 else ()
    return (*grams, device_model(device_type).per_sample(geometry))


@lru_cache(maxsize=4096)
def choose_conv_form(geometry: ConvGeometry, batch: int, device_type: str) -> ConvForm:
    """The cheapest form by the device's roofline (ties: the first of CONV_FORMS' order). Cached: a layer's
    geometry and batch repeat for every chunk of a pool."""
    model = device_model(device_type)
    forms = candidates(geometry, device_type)
    return min(forms, key=lambda form: model.seconds(form_cost(geometry, form, batch)))
