"""The paper's regime in one command (ntklib.paper_regime): its configuration, its estimate, and a
dress rehearsal of the identical entry point at CPU scale on two devices, resumed from the cache."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ntklib import paper_regime

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_is_checked_before_anything_runs():
    with pytest.raises(ValueError, match="did you mean 'width'"):
        paper_regime.load_config(None, {"widht": 3})
    with pytest.raises(ValueError, match="runs on the plain-JAX networks"):
        paper_regime.load_config(None, {"architecture": "wide_resnet"})
    with pytest.raises(ValueError, match="kernel='infinite' is invalid"):
        paper_regime.load_config(None, {"kernel": "infinite"})
    with pytest.raises(ValueError, match="budgets\\[0\\]=0 is invalid"):
        paper_regime.load_config(None, {"budgets": [0, 1]})
    with pytest.raises(FileNotFoundError, match="no such file"):
        paper_regime.load_config(ROOT / "params" / "nothing.yaml")
    assert paper_regime.main(["--config", str(ROOT / "params" / "nothing.yaml"), "--estimate"]) == 2


@pytest.mark.parametrize("device", ["h100", "h200"])
def test_the_gpu_study_is_predicted_within_eight_minutes(device, capsys):
    """The committed GPU configuration fits the slot the issue asks for, by the cost model."""
    cfg = paper_regime.load_config(ROOT / "params" / "paper_regime_gpu.yaml", {"device": device})
    rows = paper_regime.estimate(cfg)
    assert sum(r["seconds"] for r in rows) <= 8 * 60
    assert paper_regime.main(["--config", str(ROOT / "params" / "paper_regime_gpu.yaml"), "--estimate",
                              "--device", device]) == 0
    assert "total" in capsys.readouterr().out


def test_a_study_that_does_not_fit_in_memory_is_refused():
    """A WRN-28-10 (36M parameters) over 9000 images: the cached Jacobians alone exceed an H100."""
    cfg = paper_regime.load_config(ROOT / "params" / "paper_regime_gpu.yaml",
                                   {"width": 160, "depth": 28, "device": "h100"})
    with pytest.raises(ValueError, match="more than the NVIDIA H100 SXM's 80 GB"):
        paper_regime.estimate(cfg)


def _rehearse(out, cache):
    env = dict(os.environ, NTKLIB_CACHE_DIR=str(cache),
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip())
    r = subprocess.run([sys.executable, "-m", "ntklib.paper_regime", "--config",
                        str(ROOT / "params" / "paper_regime_cpu.yaml"), "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), r.stdout


@pytest.mark.cifar
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("neural_tangents") is not None,
                    reason="rehearsed once, by make test-current: the GPU machines' stack (a current JAX, no "
                           "neural-tangents) is the one the study runs on")
def test_dress_rehearsal_on_two_devices_resumes_from_the_cache(tmp_path):
    """The identical entry point at CPU scale, two (host) devices: every stage runs, the results have
    their schema, and a second run of the same command finds every stage's work in the cache. It runs
    in the current-JAX environment only (make test-current), which is what the GPU machines have."""
    res, stdout = _rehearse(tmp_path / "out", tmp_path / "cache")
    assert "ratio at 90% network ASR" in stdout
    assert [s["stage"] for s in res["stages"]] == list(paper_regime.STAGES)
    assert all(s["measured_s"] >= 0 and s["predicted_s"] is not None for s in res["stages"])
    assert res["machine"]["n_devices"] == 2 and res["machine"]["jax"]
    assert len(res["rows"]) == 4 and {r["method"] for r in res["rows"]} == {"ntba", "sampling"}
    for row in res["rows"]:
        for key in ("budget", "seed", "net_asr", "net_ca", "train_loss", "max_poison_residual", "kernel_asr"):
            assert key in row
    assert len(res["clean_victims"]) == 1 and 0 <= res["clean_accuracy"] <= 1
    assert set(res["ratios"]) >= {"0.5", "0.9"} and "every_victim_fitted" in res
    assert (tmp_path / "out" / "headline.png").stat().st_size > 0
    again, _ = _rehearse(tmp_path / "again", tmp_path / "cache")
    first = {s["stage"]: s["measured_s"] for s in res["stages"]}
    second = {s["stage"]: s["measured_s"] for s in again["stages"]}
    assert second["poisons"] < 0.5 * first["poisons"] and second["victims"] < 0.5 * first["victims"]
    assert [r["net_asr"] for r in again["rows"]] == [r["net_asr"] for r in res["rows"]]
