"""The fused kernels of the hard-thresholding iteration against their numpy formulas."""
import numpy as np

from layertrim.solvers.threshold.step_kernels import gradient_point, momentum, quadratic_terms


def test_kernels_equal_their_formulas(rng):
    Z, GZ, C, W, GW = (rng.standard_normal((7, 5)) for _ in range(5))
    step, sqrt_d = rng.random(7), rng.random(7)
    V, S = gradient_point(Z, GZ, C, step, sqrt_d)
    # the same operations in the same order per entry: equal to the last bit
    np.testing.assert_array_equal(V, Z - step[:, None] * (GZ - C))
    np.testing.assert_array_equal(S, sqrt_d[:, None] * np.abs(V))
    np.testing.assert_array_equal(momentum(W, Z, 0.3), W + 0.3 * (W - Z))
    # sums of 35 products in another order: rounding of a few eps times the sum of magnitudes
    scale = np.sum(np.abs(W * GW)) + np.sum(np.abs(C * W))
    assert abs(quadratic_terms(W, GW, C) - (0.5 * np.sum(W * GW) - np.sum(C * W))) <= 64 * np.finfo(float).eps * scale
