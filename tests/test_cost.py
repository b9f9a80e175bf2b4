"""The cost model: FLOP counts of a network's program against XLA's own count and against brute force."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntklib import cost, models

ARCHS = [
    ("wrn-10-1", lambda: models.plain_wide_resnet(10, 1), (32, 32, 3)),
    ("wrn-16-2", lambda: models.plain_wide_resnet(16, 2), (16, 16, 3)),
    ("cnn-flatten", lambda: models.plain_cnn(16, 2), (32, 32, 3)),
    ("cnn-pool-odd", lambda: models.plain_cnn(8, 1, readout="pool"), (9, 7, 1)),
    ("mlp", lambda: models.plain_mlp(128, 2), (8, 8, 1)),
]


@pytest.mark.parametrize("make,shape", [a[1:] for a in ARCHS], ids=[a[0] for a in ARCHS])
def test_forward_flops_agree_with_xla(make, shape):
    """Two independent counts of one program: ours from the jaxpr, XLA's from the compiled HLO."""
    arch = make()
    ours, xla = cost.forward_flops(arch, shape, batch=3), cost.xla_flops(arch, shape, batch=3)
    assert abs(ours / xla - 1) < 2e-3, (ours, xla)
    f = [cost.forward_flops(arch, shape, batch=b) for b in (1, 2, 3)]
    assert f[2] - f[1] == f[1] - f[0] > 0.99 * f[0]  # affine in the batch: per image, plus the weights' scaling


@pytest.mark.parametrize("n_in,k,stride,padding", [(8, 3, 1, "SAME"), (8, 3, 2, "SAME"), (7, 3, 2, "SAME"),
                                                   (9, 5, 1, "VALID"), (6, 3, 3, "SAME")])
def test_valid_taps_equal_a_convolution_of_ones(n_in, k, stride, padding):
    """The taps that land inside the image, counted by brute force: a convolution of an all-ones
    image with an all-ones kernel (zero padding) sums them."""
    x = jnp.ones((1, n_in, n_in, 1))
    w = jnp.ones((k, k, 1, 1))
    y = jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    eqn = jax.make_jaxpr(lambda a, b: jax.lax.conv_general_dilated(
        a, b, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")))(x, w).jaxpr.eqns[0]
    assert cost._conv_flops(eqn) == 2 * int(np.asarray(y).sum())


def test_dense_network_flops_by_hand():
    """plain_mlp(width, depth=1) on d inputs: 2 d w + 2 w (the two matrix products), plus the
    elementwise work; the products dominate and are counted exactly."""
    arch = models.plain_mlp(32, depth=1)
    d = 8 * 8 * 1
    total = cost.forward_flops(arch, (8, 8, 1))
    assert 2 * d * 32 + 2 * 32 <= total <= 2 * d * 32 + 2 * 32 + 10 * (32 + d)
    assert cost.n_params(arch, (8, 8, 1)) == d * 32 + 32 + 32 + 1
