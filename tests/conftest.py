import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Tests (and the notebook kernels they start) cache into a fresh folder, never build/cache.
if "NTKLIB_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["NTKLIB_CACHE_DIR"] = tempfile.mkdtemp(prefix="ntklib-test-cache-")

import pytest  # noqa: E402

import ntklib  # noqa: E402,F401  (enables jax float64)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("NTKLIB_DATA_DIR"):
        return
    skip = pytest.mark.skip(reason="CIFAR-10 tests need NTKLIB_DATA_DIR pointing at a folder "
                                   "with cifar-10-python.tar.gz (.ci/run sets it)")
    for item in items:
        if "cifar" in item.keywords:
            item.add_marker(skip)
