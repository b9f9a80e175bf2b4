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


def test_study_cost_stages_follow_their_formulas():
    """The study's stages add up the per-stage formulas; doubling the victims' steps doubles their
    training FLOPs (up to the fit checks); the greedy term against a hand-summed count."""
    arch = models.plain_cnn(8, 1, readout="pool")
    kw = dict(n_train_per_class=20, n_eval_per_class=5, n_test_per_class=10, n_pool=None, budgets=[1, 3],
              sampling_budgets=[2], seeds=[0, 1], clean_steps=100, victim_steps=100, batch_size=16, opt_steps=4)
    st = {s.name: s for s in cost.study_cost(arch, (8, 8, 1), **kw)}
    F, P = cost.per_image_flops(arch, (8, 8, 1)), cost.n_params(arch, (8, 8, 1))
    assert st["clean network(s)"].flops == cost.training_flops(F, 100, 16, 40)
    assert st["victims"].flops == 6 * cost.training_flops(F, 100, 16, 43)  # 2 seeds x 3 budgets (both attacks)
    n, n_x, m = 40, 15, 20
    by_hand = n ** 3 / 3 + sum(2 * (m - b) * ((n + b) ** 2 + n_x * (n + b)) for b in range(3))
    assert st["greedy"].flops == by_hand
    assert st["optimization"].flops == cost.optimization_flops(F, P, n, n_x, 1, 4) + \
        cost.optimization_flops(F, P, n, n_x, 3, 4)
    doubled = {s.name: s for s in cost.study_cost(arch, (8, 8, 1), **dict(kw, victim_steps=200))}
    assert 1.9 < doubled["victims"].flops / st["victims"].flops <= 2.0


def test_estimate_is_a_roofline_and_refuses_what_does_not_fit():
    dev = cost.Device("toy", fp32=1e9, tf32=2e9, bf16=4e9, fp64=5e8, bandwidth=1e9, memory=1e6)
    compute = cost.Stage("c", flops=4e9, bytes=1e6, memory=1e3, precision="tf32", programs=1, formula="")
    memory = cost.Stage("m", flops=1e6, bytes=3e9, memory=1e3, precision="fp32", programs=0, formula="")
    rows = cost.estimate([compute, memory], dev, efficiency=0.5, compile_seconds=10)
    assert rows[0]["seconds"] == pytest.approx(4e9 / (2e9 * 0.5) + 10) and rows[0]["bound"] == "compute"
    assert rows[1]["seconds"] == pytest.approx(3.0) and rows[1]["bound"] == "memory"
    big = cost.Stage("big", flops=1, bytes=1, memory=2e6, precision="fp64", programs=0, formula="")
    with pytest.raises(ValueError, match="needs 0.0 GB at once, more than the toy's"):
        cost.estimate([big], dev)
    with pytest.raises(ValueError, match="efficiency=0 is invalid"):
        cost.estimate([compute], dev, efficiency=0)


def test_the_estimate_command_reads_a_parameter_file(capsys):
    """python -m ntklib.cost --params params/cifar10_gpu.yaml: one line per stage and the total, before
    anything trains; a file it cannot read is an error with exit status 2."""
    root = cost.__file__.rsplit("/ntklib/", 1)[0]
    assert cost.main(["--params", f"{root}/params/cifar10_gpu.yaml", "--device", "h100"]) == 0
    out = capsys.readouterr().out
    for stage in ("clean network(s)", "kernel blocks", "greedy", "optimization", "victims", "clean victims",
                  "evaluation", "total"):
        assert stage in out
    assert cost.main(["--params", f"{root}/params/no_such.yaml"]) == 2
