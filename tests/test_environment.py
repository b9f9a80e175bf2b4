"""pyproject.toml and environment.yml pin the same versions; ntklib imports lean."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(3)
    return out


def test_pyproject_and_environment_yml_agree():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(proj["dependencies"])
    for extra in proj["optional-dependencies"].values():
        deps += [d for d in extra if not d.startswith("ntklib") and "cuda" not in d]
    py_pins = _pins(deps)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = _pins(pip_list)
    assert set(py_pins) == set(env_pins), (set(py_pins) ^ set(env_pins))
    diff = {k: (py_pins[k], env_pins[k]) for k in py_pins if py_pins[k] != env_pins[k]}
    assert not diff, f"pins differ (pyproject, environment.yml): {diff}"
    for key in ("jax", "jaxlib", "neural-tangents", "numpy"):
        assert key in py_pins, f"{key} must be pinned exactly"


def test_installed_versions_match_pins():
    from importlib.metadata import version

    try:
        import neural_tangents  # noqa: F401
    except ImportError:  # the current-JAX environment: its own file of pins
        pins = _pins((ROOT / "requirements-current-jax.txt").read_text().splitlines())
    else:
        pins = _pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    for name, want in pins.items():
        assert version(name) == want, f"{name}: installed {version(name)}, pinned {want}"


def test_current_jax_file_pins_a_current_stack():
    """requirements-current-jax.txt pins every line exactly, a JAX from 0.10 on with NumPy 2, and
    no neural-tangents (what GPU machines ship), so make test-current tests that stack."""
    lines = [x for x in (ROOT / "requirements-current-jax.txt").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    pins = _pins(lines)
    assert len(pins) == len(lines), "every line must pin one package with =="
    assert tuple(int(v) for v in pins["jax"].split(".")[:2]) >= (0, 10) and pins["jaxlib"] == pins["jax"]
    assert int(pins["numpy"].split(".")[0]) >= 2 and "neural-tangents" not in pins


def test_import_is_lean():
    code = ("import sys, ntklib, ntklib.kernels, ntklib.attack, ntklib.data; "
            "bad = [m for m in ('neural_tangents', 'tensorflow', 'papermill', 'jupytext') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.neural_tangents
def test_stax_architectures_do_not_import_tensorflow():
    """neural-tangents 0.6.5 imports its TensorFlow prototype (and TensorFlow, ~3 s) at import time;
    models defers that subpackage: a stax network and its kernel build without TensorFlow, and the
    prototype still works on first use (then TensorFlow is imported), by attribute and by from-import."""
    code = (
        "import sys\n"
        "from ntklib import models\n"
        "import jax.numpy as jnp\n"
        "a = models.mlp(width=32)\n"
        "a.kernel_fn(jnp.ones((2, 3)), None, 'ntk')\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported by a stax build'\n"
        "import neural_tangents as nt\n"
        "from neural_tangents.experimental import get_apply_fn_and_params\n"
        "assert 'tensorflow' in sys.modules and callable(get_apply_fn_and_params)\n"
        "assert nt.experimental.empirical_ntk_fn_tf.__name__ == 'empirical_ntk_fn_tf'\n"
        "assert type(sys.modules['neural_tangents.experimental']).__name__ == 'module'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
