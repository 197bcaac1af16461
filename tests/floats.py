"""Float comparisons that mean the same on every CPU (imported by tests as `from floats import ...`).

Two float32 computations of one function that differ in batch shape, kernel or summation order
(AVX2 on AMD, AVX-512 on Intel, another GEMM blocking for a batch of 1 than for 2, SDPA against
written-out attention) agree to some float32 roundings of the *largest* terms they sum, not of each
element: an output near zero carries the absolute error of the big terms it came from. So these
tolerances are relative to a tensor's scale (its largest magnitude), never absolute and never
per element, and a difference is judged the same way.

What the suite's comparisons measured on an AMD EPYC, with PyTorch's AVX-512, AVX2 and scalar
kernels (ATEN_CPU_CAPABILITY), MKL and oneDNN held to AVX2, MKL_CBWR=COMPATIBLE and one thread:
equal computations differ by at most 5.9e-7 of the scale (the Intel AVX-512 failures that
prompted this module were 1.25e-6 and 1.6e-6 absolute, on embeddings of scale ~1), so SAME = 1e-5
leaves a 6-17x margin. What the tests guard against (another token pooled, padding attended, an
alpha ignored, a gradient term lost) moved results by 2.5e-2 .. 0.6 of the scale, so DIFFERENT =
1e-3 separates them by 25x or more.
"""

from __future__ import annotations

import numpy as np
import torch

SAME = 1e-5  # float32 results of one function computed two ways: ~80 float32 epsilons of the scale
DIFFERENT = 1e-3  # a behavioural change: at least this share of the scale


def _tensor(value) -> torch.Tensor:
    return value.detach().cpu().double() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value), dtype=torch.float64)


def deviation(actual, expected) -> float:
    """max |actual - expected| / max |expected| (0 when both are exactly zero)."""
    actual, expected = _tensor(actual), _tensor(expected)
    assert actual.shape == expected.shape, f"shapes differ: {tuple(actual.shape)} vs {tuple(expected.shape)}"
    difference = (actual - expected).abs().max().item() if expected.numel() else 0.0
    scale = expected.abs().max().item() if expected.numel() else 0.0
    if scale == 0.0:
        return 0.0 if difference == 0.0 else float("inf")
    return difference / scale


def assert_same(actual, expected, rel: float = SAME, what: str = "") -> None:
    """actual equals expected up to `rel` of expected's scale."""
    found = deviation(actual, expected)
    assert found <= rel, f"{what + ': ' if what else ''}max difference {found:.3g} of the scale > {rel:g}"


def assert_different(actual, expected, rel: float = DIFFERENT, what: str = "") -> None:
    """actual differs from expected by more than `rel` of expected's scale somewhere."""
    found = deviation(actual, expected)
    assert found > rel, f"{what + ': ' if what else ''}max difference {found:.3g} of the scale <= {rel:g}"


def assert_same_directions(actual, expected, min_cosine: float = 1 - 1e-6, what: str = "") -> None:
    """Row by row, actual points where expected does (embeddings whose length does not matter)."""
    actual, expected = _tensor(actual), _tensor(expected)
    cosines = torch.nn.functional.cosine_similarity(actual, expected, dim=-1)
    worst = cosines.min().item()
    assert worst >= min_cosine, f"{what + ': ' if what else ''}lowest cosine {worst:.9f} < {min_cosine:.9f}"
