"""Notebooks: .py/.ipynb pairs agree, one parameters cell, smoke runs write their outputs."""
import json
from pathlib import Path

import jupytext
import pytest

from ntklib import runner

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))

EXPECTED = {
    "01_ntk_background": ["ntk_convergence.png", "ntk_convergence.csv", "ntk_matrices.png",
                          "network_vs_kernel.png", "network_vs_kernel.csv", "ntk_spectrum.png", "ntk_spectrum.csv"],
    "02_backdoor_loss": ["trigger.png", "sampling_kernel_asr_ca.png", "sampling_kernel_asr_ca.csv",
                         "hinge_prediction_distribution.png", "hinge_prediction_distribution.csv"],
    "03_greedy_initialization": ["rank_one_check.json", "greedy_vs_random.png", "greedy_vs_random.csv",
                                 "swap_refinement.json", "scoring_time.png", "scoring_time.csv"],
    "04_poison_optimization": ["optimization_history.png", "optimization_history.csv",
                               "poisons_before_after.png", "poisons_difference.png", "poisons.npz",
                               "poisons.json", "poisons.png", "checkpoint.npz"],
    "05_transfer_to_networks": ["headline_asr_vs_budget.png", "headline_asr_vs_budget.csv", "sweep.csv",
                                "results.json"],
    "06_what_transfers": ["kernel_vs_network_asr.png", "kernel_vs_network_asr.csv", "kernel_comparison.csv",
                          "efficiency_ratio_curve.png", "efficiency_ratio_curve.csv", "victim_variants.png",
                          "victim_variants.csv", "results.json"],
    "07_defenses": ["detection.png", "detection.csv", "spectral_directions.png", "spectral_directions.csv",
                    "removal_retrain.png", "removal_retrain.csv", "ibau.png", "datamodel_stability.csv",
                    "ibau.csv", "runtime.csv", "results.json"],
    "08_adversarial_ntk": ["accuracy_vs_eps.png", "accuracy_vs_eps.csv", "eigen_features.png", "eigen_features.csv",
                           "feature_gradients.png", "kernel_dynamics.png", "kernel_dynamics.csv", "results.json"],
    "09_reconstruction": ["reconstructions.png", "reconstructions.csv", "ssim_vs_n_over_w.png", "ssim_vs_n_over_w.csv",
                          "distillation.png", "distillation.csv", "poisons.png", "poisons.csv", "results.json"],
}


def test_every_expected_notebook_exists():
    assert [p.stem for p in SOURCES] == sorted(EXPECTED)


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_pair_in_sync_and_one_parameters_cell(src):
    assert not runner.unsynced_pairs([src]), "run `make notebooks`"
    py_nb = jupytext.read(src)
    tagged = [c for c in py_nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for knob in ["dataset", "source", "target", "seed", "smoke", "fig_dir"]:  # what every notebook shares
        assert f"\n{knob} = " in "\n" + tagged[0].source, f"{src.stem}: parameter {knob} missing"
    assert py_nb.metadata["kernelspec"]["name"] == "python3"
    assert py_nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    first = py_nb.cells[0]
    assert first.cell_type == "markdown" and "Runtime" in first.source and "ntklib used" in first.source


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A folder for the smoke runs (each notebook runs once, on first use; see _smoke_run):
    figures in <root>/<notebook>/, executed copies in <root>/executed/."""
    return tmp_path_factory.mktemp("smoke")


def _smoke_run(root, src):
    if not (root / "executed" / f"{src.stem}.ipynb").exists():
        runner.run(src, {"smoke": True, "fig_dir": str(root)}, root / "executed", timeout=300)
    return root / src.stem


@pytest.mark.slow
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_smoke_run_writes_figures(src, smoke):
    folder = _smoke_run(smoke, src)
    for name in EXPECTED[src.stem]:
        path = folder / name
        assert path.exists() and path.stat().st_size > 0, f"{src.stem} did not write {name}"
    if src.stem.startswith("05"):
        res = json.loads((folder / "results.json").read_text())
        assert "efficiency_ratio" in res and res["per_method_budget"]
        assert {k.split("/")[0] for k in res["per_method_budget"]} == {"ntba", "sampling"}


def test_bad_parameter_fails_early_with_clear_message(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match="kernel='magic' is invalid"):
        runner.run(SOURCES[1], {"kernel": "magic", "fig_dir": str(tmp_path)}, tmp_path / "executed", timeout=120)



@pytest.mark.slow
def test_runner_console_is_one_line_per_notebook(tmp_path):
    """Third-party start-up noise (TensorFlow's cuda lines, absl, the kernel's TCP warning) goes to
    the notebook's log, not the console; the console has one line per notebook. A relative --out
    (relative to where the runner starts, not to notebooks/ where the kernel runs) gets the profile."""
    import os
    import subprocess
    import sys

    out = os.path.relpath(tmp_path / "x", ROOT)
    r = subprocess.run([sys.executable, "-m", "ntklib.runner", "--smoke", "02", "--out", out,
                        "-p", f"fig_dir={tmp_path}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    console = r.stdout + r.stderr
    for noise in ("cuda drivers", "absl", "without encryption", "WARNING"):
        assert noise not in console, f"{noise!r} reached the console:\n{console}"
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(lines) == 2 and "02_backdoor_loss ... done in" in lines[0] and "figures in" in lines[0]
    assert (tmp_path / "x" / "02_backdoor_loss.log").exists()
    assert "cannot write the profile" not in (tmp_path / "x" / "02_backdoor_loss.log").read_text()
    assert json.loads((tmp_path / "x" / "02_backdoor_loss.profile.json").read_text())


def test_a_failing_notebook_shows_the_end_of_its_log(tmp_path, capfd):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError):
        runner.run(SOURCES[1], {"kernel": "magic", "fig_dir": str(tmp_path)}, tmp_path / "executed", timeout=120)
    assert "02_backdoor_loss failed; the end of its log" in capfd.readouterr().err


@pytest.fixture(scope="module")
def site(smoke, tmp_path_factory):
    """The documentation site (make book) built with warnings as errors from the smoke runs'
    executed notebooks."""
    from ntklib import book

    for src in SOURCES:
        _smoke_run(smoke, src)
    out = tmp_path_factory.mktemp("site") / "book"
    book.build(smoke / "executed", out, strict=True)
    return out


def _outputs(nb):
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            text = o.get("text", "") if o["output_type"] == "stream" else str(o.get("data", {}).get("text/plain", ""))
            yield o, text


@pytest.mark.slow
def test_executed_notebooks_show_the_science_not_noise(smoke):
    """No stderr (library warnings, TensorFlow's start-up lines), no machine path and no stray
    return value (a saved figure's paths) in what the notebooks print."""
    import nbformat

    for src in SOURCES:
        _smoke_run(smoke, src)
        nb = nbformat.read(smoke / "executed" / f"{src.stem}.ipynb", as_version=4)
        for o, text in _outputs(nb):
            assert not (o["output_type"] == "stream" and o["name"] == "stderr"), f"{src.stem}: stderr {text[:300]!r}"
            assert "PosixPath" not in text and str(smoke) not in text and str(ROOT) not in text, \
                f"{src.stem}: a path in its outputs: {text[:300]!r}"


@pytest.mark.slow
def test_site_has_a_page_for_every_notebook_doc_and_module(site, smoke):
    """make book: each notebook's page shows its outputs and figures, its "ntklib used" names link
    to the API reference, each module's API page links back to the notebooks that use it."""
    from ntklib import book

    for src in SOURCES:
        page = (site / "notebooks" / f"{src.stem}.html").read_text()
        n_fig = len([p for p in (smoke / src.stem).glob("*.png") if not p.with_suffix(".npz").exists()])
        assert page.count("<img ") >= n_fig, f"{src.stem}: figures missing from its page"
        assert "Not executed yet" not in page and "cudart" not in page
        for module, name in book.notebook_uses()[src.stem]:
            target = book.api_target(module, name)
            assert f'.html#{target}"' in page, f"{src.stem}: {module}.{name} is not linked to its API entry {target}"
    for doc in (ROOT / "docs").glob("*.md"):
        assert (site / "docs" / f"{doc.stem}.html").exists()
    for module in book.api_modules():
        assert (site / "api" / f"{module}.html").exists(), module
    api = (site / "api" / "greedy.html").read_text()
    assert 'id="ntklib.greedy.greedy_init"' in api and "../notebooks/03_greedy_initialization.html" in api
    # a docstring's plain-text equation block is preformatted, its LaTeX block typeset
    loss = (site / "api" / "backdoor_loss.html").read_text()
    assert 'class="math' in loss and "dL/dK(X_p, X_d) = G[p, d]" in loss.split("<pre>", 1)[1]
    # results.md's rows link to their notebook; nothing is fetched from the network
    assert "../notebooks/05_transfer_to_networks.html" in (site / "docs" / "results.html").read_text()
    import re

    for page in site.rglob("*.html"):  # no script, style sheet or font from the network
        remote = re.findall(r'<(?:script|link)[^>]*(?:src|href)="(?:https?:)?//[^"]*"', page.read_text())
        assert not remote, (page, remote)


@pytest.mark.slow
def test_site_in_a_real_browser(site):
    """Headless Chromium reads the site as a reader would (served by http.server, and search also
    from file://): the math of a notebook page and of an API page is typeset by the site's own
    MathJax, every image loaded, and searching "Schur complement" finds the greedy page."""
    import browser

    why = browser.missing()
    if why:
        pytest.skip(why)
    with browser.Site(site) as reader:
        for rel in ("notebooks/03_greedy_initialization.html", "api/backdoor_loss.html"):
            st = reader.page(rel)
            assert st["typeset"] > 0, f"{rel}: no equation typeset"
            assert st["mathjax_src"] and all(s.startswith(reader.base) for s in st["mathjax_src"]), st["mathjax_src"]
            assert "$" not in st["text"], f"{rel}: raw TeX left: {st['text'][st['text'].find('$') - 80:][:200]!r}"
            assert all(ok for _, ok in st["images"]), f"{rel}: images not loaded: {st['images']}"
        assert reader.page("notebooks/03_greedy_initialization.html")["images"], "the greedy page shows no figure"
        for file in (False, True):
            hits = reader.search("Schur complement", file=file)
            assert any(h.split("?")[0].endswith("notebooks/03_greedy_initialization.html") for h in hits), hits
