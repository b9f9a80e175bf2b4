"""Kernels against independent computations (docs/design.md, section 6)."""
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from ntklib import data, kernels, models


@pytest.fixture(scope="module")
def X():
    return data.load_digits()[0][:12].astype(np.float64)


def _kinds():
    plain = models.plain_mlp(256)  # the empirical kernel needs no neural-tangents (make test-current runs it)
    return {
        "infinite_ntk": lambda: kernels.infinite_ntk(models.mlp(256)),
        "infinite_nngp": lambda: kernels.infinite_nngp(models.mlp(256)),
        "empirical_ntk": lambda: kernels.empirical_ntk(plain.apply_fn, plain.init(0, (8, 8, 1))),
        "rbf": lambda: kernels.rbf(2.0),
    }


@pytest.mark.parametrize("kind", ["infinite_ntk", "infinite_nngp", "empirical_ntk", "rbf"])
def test_symmetric_psd_and_tiled_equals_monolithic(X, kind):
    k = _kinds()[kind]()
    K = k(X).astype(np.float64)
    assert K.shape == (12, 12)
    np.testing.assert_allclose(K, K.T, rtol=1e-5, atol=1e-6 * np.abs(K).max())
    eig = np.linalg.eigvalsh((K + K.T) / 2)
    assert eig.min() > -1e-5 * eig.max()
    k.tile = (5, 7)  # ragged tiles, padded
    np.testing.assert_allclose(k(X), K, rtol=1e-5, atol=1e-6 * np.abs(K).max())
    np.testing.assert_allclose(k(X[:5], X[3:]), K[:5, 3:], rtol=1e-5, atol=1e-6 * np.abs(K).max())


def _conv_error(make, widths, X, seeds=(0, 1, 2)):
    errs = []
    for w in widths:
        arch = make(w)
        K = kernels.infinite_ntk(arch)(X)
        e = [np.linalg.norm(kernels.empirical_ntk(arch.apply_fn, arch.init(s, X.shape))(X) - K)
             / np.linalg.norm(K) for s in seeds]
        errs.append(float(np.mean(e)))
    return errs


def test_empirical_ntk_approaches_infinite_mlp(X):
    """Relative Frobenius error ~ 1/sqrt(width): measured 0.31, 0.13, 0.068."""
    errs = _conv_error(lambda w: models.mlp(w), [64, 256, 1024], X)
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.12, errs


def test_empirical_ntk_approaches_infinite_flatten_cnn(X):
    """Measured 0.26, 0.20, 0.067 for widths 16, 64, 256."""
    errs = _conv_error(lambda w: models.cnn(w, depth=2), [16, 64, 256], X)
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.15, errs


@pytest.mark.neural_tangents
@pytest.mark.parametrize("make", [lambda: models.mlp(64), lambda: models.cnn(8)], ids=["mlp", "cnn"])
def test_empirical_ntk_matches_neural_tangents(X, make):
    import neural_tangents as nt

    arch = make()
    params = arch.init(1, X.shape)
    ours = kernels.empirical_ntk(arch.apply_fn, params, dtype="float64")(X[:6], X[4:])
    ref = nt.empirical_ntk_fn(arch.apply_fn, trace_axes=(-1,), vmap_axes=0)(X[:6], X[4:], params)
    np.testing.assert_allclose(ours, np.asarray(ref).reshape(ours.shape), rtol=2e-5)


def test_plain_mlp_equals_stax_mlp(X):
    """The plain-JAX network (no neural-tangents) is the same function as stax's."""
    stax_arch, plain = models.mlp(32, activation="erf"), models.plain_mlp(32, activation="erf")
    params = stax_arch.init(0, X.shape)
    dense = [p for p in params if p != ()]
    np.testing.assert_allclose(plain.predict(dense, X), stax_arch.predict(params, X), rtol=1e-5)


@pytest.mark.parametrize("name, kw", [("cnn", dict(width=6, depth=2)),
                                      ("cnn", dict(width=5, depth=1, readout="pool", activation="erf")),
                                      ("wide_resnet", dict(depth=10, k=2, b_std=0.1))])
def test_plain_conv_twins_equal_stax(name, kw):
    """plain_cnn / plain_wide_resnet are stax's cnn / wide_resnet: the same parameter leaves
    (shapes, order) give the same outputs and the same empirical NTK, on images with an odd
    side (SAME padding and stride 2 round the same way) and 3 channels."""
    x = np.random.default_rng(0).uniform(size=(5, 9, 9, 3))
    ref, twin = models.build(dict(name=name, **kw)), models.build(dict(name=models.PLAIN[name], **kw))
    p = ref.init(3, x.shape)
    leaves = jax.tree_util.tree_leaves(p)
    q = twin.init(3, x.shape)
    assert [a.shape for a in leaves] == [a.shape for a in jax.tree_util.tree_leaves(q)]
    q = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(q), leaves)
    np.testing.assert_allclose(twin.predict(q, x), ref.predict(p, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(twin.features(q, x), ref.features(p, x) if ref.features_fn else twin.features(q, x),
                               rtol=1e-5, atol=1e-6)
    k_ref = kernels.empirical_ntk(ref.apply_fn, p, dtype="float64")(x)
    k_twin = kernels.empirical_ntk(twin.apply_fn, q, dtype="float64")(x)
    np.testing.assert_allclose(k_twin, k_ref, rtol=1e-5)


def _fd_check(kernel, Xp, Xo, sym, h, rtol):
    rng = np.random.default_rng(0)
    C = rng.normal(size=(len(Xp), len(Xp) if sym else len(Xo)))

    def L(xp):
        return float(np.sum(C * kernel(xp, xp if sym else Xo)))

    g = kernel.vjp(Xp, cot_self=C) if sym else kernel.vjp(Xp, Xo, C)
    assert g.shape == Xp.shape
    for _ in range(3):
        v = rng.normal(size=Xp.shape)
        fd = (L(Xp + h * v) - L(Xp - h * v)) / (2 * h)
        np.testing.assert_allclose(np.sum(g * v), fd, rtol=rtol, atol=rtol * np.abs(g).sum() * 1e-3)


FD_CASES = {
    "infinite_erf": (lambda: kernels.infinite_ntk(models.mlp(8, activation="erf"), dtype="float64"), 1e-4, 1e-6),
    # ReLU: K(x, x) is not smooth at angle 0; FD agreement levels off near 1e-5 for K_pp.
    "infinite_relu_cnn": (lambda: kernels.infinite_ntk(models.cnn(4), dtype="float64"), 1e-4, 5e-5),
    "empirical_erf": (lambda: kernels.empirical_ntk(
        models.plain_mlp(16, activation="erf").apply_fn, models.plain_mlp(16, activation="erf").init(0, (8, 8, 1)),
        dtype="float64"), 1e-4, 1e-6),
    "empirical_plain_relu": (lambda: kernels.empirical_ntk(
        models.plain_mlp(16).apply_fn, models.plain_mlp(16).init(0, (8, 8, 1)), dtype="float64"), 1e-6, 1e-5),
    # a convolution's Jacobian features: vjp goes through the forward-mode feature_dot
    "empirical_cnn": (lambda: kernels.empirical_ntk(
        models.plain_cnn(3, activation="erf").apply_fn, models.plain_cnn(3, activation="erf").init(0, (8, 8, 1)),
        dtype="float64"), 1e-5, 1e-6),  # h = 1e-5: central differences of this erf CNN err 4e-6 at 1e-4
    "rbf": (lambda: kernels.rbf(1.5, dtype="float64"), 1e-4, 1e-6),
}


@pytest.mark.parametrize("sym", [False, True], ids=["K_po", "K_pp"])
@pytest.mark.parametrize("case", sorted(FD_CASES))
def test_vjp_matches_finite_differences_float64(X, case, sym):
    make, h, rtol = FD_CASES[case]
    k = make()
    k.tile = (2, 3)  # exercise tiling in the backward pass too
    _fd_check(k, X[:4], X[4:9], sym, h, rtol)


def test_dtype_choice(X):
    arch = models.mlp(64)
    k32 = kernels.infinite_ntk(arch)
    k64 = kernels.infinite_ntk(arch, dtype="float64")
    assert k32(X).dtype == np.float32 and k64(X).dtype == np.float64
    # float32 loses ~1e-4 on the diagonal (arccos of a cosine near 1 in the ReLU kernel)
    np.testing.assert_allclose(k32(X), k64(X), rtol=3e-4)


def test_errors(X):
    k = kernels.rbf()
    with pytest.raises(ValueError, match="cotangent of the kernel block.*must have shape"):
        k.vjp(X[:3], X, np.ones((3, 2)))
    with pytest.raises(ValueError, match="cotangent of the kernel block.*must have shape"):
        k.vjp(X[:3], cot_self=np.ones((3, 2)))
    with pytest.raises(ValueError, match="x2 and cot together"):
        k.vjp(X[:3], X)
    with pytest.raises(ValueError, match="nothing to differentiate"):
        k.vjp(X[:3])
    with pytest.raises(ValueError, match="NaN"):
        k(np.full((2, 8, 8, 1), np.nan))
    with pytest.raises(ValueError, match="same image shape"):
        k(X, X[:, :4])
    with pytest.raises(ValueError, match=r"dtype='float16' is invalid: must be one of \['float32', 'float64'\]"):
        kernels.rbf(dtype="float16")
    with pytest.raises(ValueError, match="no infinite-width kernel"):
        kernels.infinite_ntk(models.plain_mlp())
    with pytest.raises(ValueError, match="kind='magic' is invalid: must be one of"):
        kernels.make_kernel("magic")


def test_auto_tile_is_bounded():
    arch = models.mlp(4096)  # 17M parameters
    k = kernels.empirical_ntk(arch.apply_fn, arch.init(0, (8, 8, 1)), memory=1 << 30)
    assert 1 <= k.tile[0] <= 512 and k.tile[0] * 3 * 4 * 17e6 <= (1 << 30)
    pooled = kernels.infinite_ntk(models.cnn(8, readout="pool"), input_shape=(32, 32, 3))
    assert pooled.tile[0] < kernels.infinite_ntk(models.cnn(8), input_shape=(32, 32, 3)).tile[0]


def test_multi_device_sharding_matches_single_device(X, tmp_path):
    """With 2 (virtual CPU) devices, tiles are sharded across both; results agree."""
    code = textwrap.dedent(f"""
        import numpy as np, jax
        from ntklib import data, kernels, models
        assert jax.local_device_count() == 2
        X = data.load_digits()[0][:12].astype(np.float64)
        arch = models.plain_mlp(32)
        k = kernels.empirical_ntk(arch.apply_fn, arch.init(0, (8, 8, 1)), tile=(5, 4))
        np.savez("{tmp_path}/out.npz", K=k(X), g=k.vjp(X[:5], X, np.ones((5, 12))))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    arch = models.plain_mlp(32)
    k = kernels.empirical_ntk(arch.apply_fn, arch.init(0, (8, 8, 1)), tile=(5, 4))
    np.testing.assert_allclose(out["K"], k(X), rtol=1e-5)
    np.testing.assert_allclose(out["g"], k.vjp(X[:5], X, np.ones((5, 12))), rtol=1e-4, atol=1e-6)


def test_empirical_feature_cache_equals_tiled_pairs(X):
    """The cached-Jacobian path (features of x2 computed once) gives the same blocks and
    VJPs as the tile-by-tile pair path, and the cache follows the array's contents."""
    arch = models.plain_mlp(64)
    params = arch.init(0, X.shape)
    fast = kernels.empirical_ntk(arch.apply_fn, params, dtype="float64")
    slow = kernels.empirical_ntk(arch.apply_fn, params, dtype="float64", memory=150_000)  # no room to cache
    assert slow._cached_features(X) is None and fast._cached_features(X) is not None
    C = np.random.default_rng(0).normal(size=(4, 12))
    np.testing.assert_allclose(fast(X[:4], X), slow(X[:4], X), rtol=1e-10)
    np.testing.assert_allclose(fast.vjp(X[:4], X, C), slow.vjp(X[:4], X, C), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fast.vjp(X[:4], cot_self=C[:, :4]),
                               slow.vjp(X[:4], cot_self=C[:, :4]), rtol=1e-8, atol=1e-12)
    # both blocks in one pass = the sum of the two
    np.testing.assert_allclose(fast.vjp(X[:4], X, C, cot_self=C[:, 4:8]),
                               slow.vjp(X[:4], X, C) + slow.vjp(X[:4], cot_self=C[:, 4:8]), rtol=1e-8, atol=1e-12)
    Y = X.copy()
    first = fast(X[:2], Y)
    Y[3] = 1 - Y[3]  # same array object, new contents: must not reuse the stale Jacobian
    np.testing.assert_allclose(fast(X[:2], Y), slow(X[:2], Y), rtol=1e-10)
    assert not np.allclose(fast(X[:2], Y)[:, 3], first[:, 3])
    assert len(fast._cache) <= 3


def test_empirical_ntk_on_two_devices_equals_the_jacobian_product():
    """With two (host) devices the empirical NTK of convolutional networks equals J J^T computed
    directly: with tile rows sharded, XLA's per-example convolution gradients came out wrong (the
    kernel now keeps them on one device; this test failed before, by 34-66% of the largest entry)."""
    import os
    import subprocess
    import sys

    code = """
import numpy as np, jax, jax.numpy as jnp, jax.flatten_util
import ntklib
from ntklib import models, kernels
assert jax.device_count() == 2
X = np.random.default_rng(0).random((6, 8, 8, 3)).astype(np.float32)
for arch in (models.plain_cnn(8, 1), models.plain_wide_resnet(10, 1), models.plain_mlp(16)):
    p = arch.init(0, (8, 8, 3))
    K = np.asarray(kernels.empirical_ntk(arch.apply_fn, p)(X), np.float64)
    J = jax.vmap(lambda x: jax.flatten_util.ravel_pytree(jax.grad(lambda q: arch.apply_fn(q, x[None]).sum())(p))[0])(
        jnp.asarray(X))
    ref = np.asarray(J @ J.T, np.float64)
    print(arch.spec["name"], np.abs(K - ref).max() / np.abs(ref).max())
    assert np.abs(K - ref).max() < 1e-5 * np.abs(ref).max()
"""
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                                      " --xla_force_host_platform_device_count=2").strip())
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


def test_one_kernel_vocabulary():
    """make_kernel, the notebooks' kernel parameter and pipeline.prepare take the same names."""
    from ntklib import params as _params
    from ntklib import pipeline

    assert pipeline.CHOICES["kernel"] == tuple(kernels.DESIGN_KERNELS)
    assert set(_params.defaults("06_what_transfers")["kernels"]) <= set(kernels.DESIGN_KERNELS)
    arch = models.mlp(8, depth=1)
    p = arch.init(0, (8, 8, 1))
    X = data.load_digits()[0][:4]
    for kind in ("empirical", "empirical_init"):
        k = kernels.make_kernel(kind, arch, p, dtype="float64")
        np.testing.assert_allclose(k(X), kernels.empirical_ntk(arch.apply_fn, p, dtype="float64")(X), rtol=1e-12)
        assert k.spec["at"] == kind
    np.testing.assert_allclose(kernels.make_kernel("infinite", arch, dtype="float64")(X),
                               kernels.infinite_ntk(arch, dtype="float64")(X), rtol=1e-12)
    with pytest.raises(ValueError, match="several kernels"):
        kernels.make_kernel("empirical_ensemble", arch, p)
    with pytest.raises(ValueError, match="must be one of"):
        kernels.make_kernel("nngp", arch)
