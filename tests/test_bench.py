"""The benchmark scripts keep working: each runs once in --quick mode (in this process: each
script's start-up, importing JAX and neural-tangents, would cost ~10 s more than its quick run)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the benchmarks compare against stax architectures and infinite kernels (the pinned stack)
pytestmark = pytest.mark.neural_tangents


def _run(script, out):
    """``python bench/<script> --quick --out <out>``, through the script's main()."""
    spec = importlib.util.spec_from_file_location(f"bench_{Path(script).stem}", ROOT / "bench" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--out", str(out)]) in (None, 0)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_kernel_benchmark_quick(tmp_path):
    res = _run("kernels.py", tmp_path / "k.json")
    assert res["throughput"] and all(row["entries_per_s"] > 0 for row in res["throughput"])
    assert all(row["ratio"] > 0 for row in res["gradient_ratio"])


@pytest.mark.slow
def test_greedy_benchmark_quick(tmp_path):
    res = _run("greedy.py", tmp_path / "g.json")
    assert all(r["same_pick"] and r["max_rel_score_diff"] < 1e-8 for r in res["rows"])


@pytest.mark.slow
def test_scale_benchmark_quick(tmp_path):
    res = _run("scale.py", tmp_path / "s.json")
    assert [r["n"] for r in res["rows"]] == [200, 400]
    assert all(r["setup_s"] > 0 and r["step_s"] > 0 and r["peak_rss_mb"] >= r["baseline_rss_mb"] for r in res["rows"])
    m = res["model"]  # at these sizes the n^2 memory is within the noise: a model, or none said
    assert (m["bytes_per_entry"] > 0 and m["largest_d"] > 400) or m["largest_d"] is None


def test_results_block_is_generated_from_the_json():
    """docs/results.md's tables are bench/report.py's output (run `python bench/report.py --write`)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import report

    readme = (ROOT / "docs" / "results.md").read_text()
    assert report.START in readme and report.END in readme
    block = readme[readme.index(report.START):readme.index(report.END) + len(report.END)]
    assert block == report.report(), "docs/results.md is stale: run `python bench/report.py --write`"


@pytest.mark.slow
def test_train_benchmark_quick(tmp_path):
    res = _run("train.py", tmp_path / "t.json")
    assert all(r["old_gflops"] > 0 and r["speedup"] > 0 for r in res["rows"])
    assert res["sweep"]["same_stopping_steps"]


@pytest.mark.slow
def test_validation_benchmark_quick(tmp_path):
    res = _run("validation.py", tmp_path / "v.json")
    assert all(r["seconds"] > 0 for r in res["checks"])
    assert 0 < res["pipeline"]["validation_s"] < res["pipeline"]["wall_s"]


@pytest.mark.slow
def test_adversarial_benchmark_quick(tmp_path):
    res = _run("adversarial.py", tmp_path / "a.json")
    assert all(r["fgsm_s"] > 0 and r["n_test"] == 100 for r in res["rows"])


@pytest.mark.slow
def test_defenses_benchmark_quick(tmp_path):
    res = _run("defenses.py", tmp_path / "d.json")
    assert len(res["rows"]) == 8 and all(r["seconds"] > 0 for r in res["rows"])
    assert all(r["auc"] > 0.8 for r in res["rows"] if "auc" in r)
    assert res["rows"][-1]["what"].startswith("I-BAU")


@pytest.mark.slow
def test_reconstruction_benchmark_quick(tmp_path):
    res = _run("reconstruction.py", tmp_path / "r.json")
    assert len(res["rows"]) == 5 and all(r["train_loss"] < 1e-10 for r in res["rows"])
    assert [r["grad_at"] for r in res["rows"]] == ["final", "final", "init", "both", "init"]
    assert res["step_cost"]["ratio"] > 0


@pytest.mark.slow
def test_ibau_benchmark_quick(tmp_path):
    res = _run("ibau.py", tmp_path / "i.json")
    variants = {r["variant"] for r in res["final"]}
    assert variants == {"I-BAU", "no indirect term", "fine-tuning"}
    assert all(r["spectral_radius"] > 0 for r in res["rows"] if r["variant"] == "I-BAU" and r["round"] > 0)


@pytest.mark.slow
def test_cost_benchmark_quick(tmp_path):
    res = _run("cost.py", tmp_path / "c.json")
    assert [r["stage"] for r in res["rows"]] == ["victim training", "kernel blocks", "greedy", "optimization"]
    assert all(r["seconds"][1] > 0 and r["gflop"][1] > r["gflop"][0] for r in res["rows"])
