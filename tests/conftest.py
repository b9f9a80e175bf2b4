import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Tests (and the notebook kernels they start) cache into a fresh folder, never build/cache.
import tempfile  # noqa: E402

if "NTKLIB_CACHE_DIR" not in os.environ:
    os.environ["NTKLIB_CACHE_DIR"] = tempfile.mkdtemp(prefix="ntklib-test-cache-")
# ... and matplotlib's font list too: the user-wide one is shared by every environment on the machine
# (both suites of .ci/run run side by side), and one built while an environment's fonts were missing
# leaves mathtext without STIX, which a notebook then reports on stderr
os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="ntklib-test-matplotlib-")

import pytest  # noqa: E402

import ntklib  # noqa: E402,F401  (enables jax float64)
from ntklib.models import NeuralTangentsMissing  # noqa: E402

try:
    import neural_tangents  # noqa: F401
    HAVE_NEURAL_TANGENTS = True
except ImportError:  # the current-JAX environment (make test-current): no neural-tangents
    HAVE_NEURAL_TANGENTS = False
NO_NT = ("needs neural-tangents (the pinned stack, make test); this is the current-JAX environment "
         "(make test-current)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not HAVE_NEURAL_TANGENTS and "neural_tangents" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=NO_NT))
        if not os.environ.get("NTKLIB_DATA_DIR") and "cifar" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="CIFAR-10 tests need NTKLIB_DATA_DIR pointing at a folder "
                                                    "with cifar-10-python.tar.gz (.ci/run sets it)"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Without neural-tangents, a test that fails only because it builds a stax architecture
    (models.NeuralTangentsMissing, in setup or body) is reported as skipped, with the reason;
    every other failure stays a failure. With neural-tangents nothing changes."""
    outcome = yield
    rep = outcome.get_result()
    if (not HAVE_NEURAL_TANGENTS and call.excinfo is not None
            and call.excinfo.errisinstance(NeuralTangentsMissing)):
        rep.outcome = "skipped"
        rep.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {NO_NT}")
