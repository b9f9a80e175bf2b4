"""The results tables of docs/results.md, generated from the saved JSON.

Reads every ``results.json`` of notebooks 05 and 06 under ``figures/`` (the
defaults and any extra configuration run with ``-p fig_dir=figures/<name>``) and
the benchmark JSON under ``bench/results/``, and prints two markdown tables:
attack efficiency on trained networks, and speed/memory. With ``--write`` it
rewrites the block between the ``<!-- results:start -->`` and
``<!-- results:end -->`` markers in docs/results.md (a test checks that the block is
current).

    python bench/report.py            # print
    python bench/report.py --write    # update docs/results.md
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _trigger(spec: dict) -> str:
    t = spec.get("trigger") or spec.get("task", {}).get("trigger", {})
    if t.get("name") == "periodic":
        return f"periodic {t.get('amplitude'):.3g}"
    return str(t.get("name"))


def _fmt_ratio(r: dict) -> str:
    if r is None or r.get("ratio") is None:
        return "NTBA < 90%"
    return f"{'≥ ' if r.get('lower_bound') else ''}{r['ratio']:.1f}"


def _budget(r: dict, key: str, max_budget=None) -> str:
    b = r.get(key) if r else None
    return str(b) if b is not None else (f"> {max_budget}" if max_budget else "—")


def _ca(table: dict, key: str, col: str) -> str:
    return f"{table[key][col]:.3f}" if key in table else "—"


def _source(path: Path, figure: str) -> str:
    """The row's sources as links from docs/results.md: the results file, the figure beside it and
    the notebook that wrote them (the documentation site turns them into its own pages)."""
    rel = path.relative_to(ROOT).as_posix()
    links = [f"[{rel}](../{rel})"]
    if (path.parent / figure).exists():
        links.append(f"[figure](../{path.parent.relative_to(ROOT).as_posix()}/{figure})")
    nb = path.parent.name
    return " · ".join(links + [f"[notebook {nb[:2]}](../notebooks/{nb}.ipynb)"])


def attack_rows() -> list[str]:
    rows = []
    for path in sorted(ROOT.glob("figures/**/05_transfer_to_networks/results.json")):
        res = json.loads(path.read_text())
        c = res["config"]
        task = c["task"]
        r = res["efficiency_ratio"]["network"]
        rows.append((task["dataset"], f"{task['source']} → {task['target']}", _trigger(task),
                     f"{c['architecture'].get('name')}-{c['architecture'].get('width', '')}", c["kernel"],
                     _budget(r, "ntba_budget"),
                     _ca(res["per_method_budget"], f"ntba/{r['ntba_budget']}", "net_ca_mean"),
                     _budget(r, "sampling_budget", max(c["budgets"])),
                     _fmt_ratio(r), len(c["seeds"]), _source(path, "headline_asr_vs_budget.png")))
    for path in sorted(ROOT.glob("figures/**/06_what_transfers/results.json")):
        res = json.loads(path.read_text())
        c = res["config"]
        if c.get("smoke"):
            continue
        for k, entry in res["kernel_comparison"].items():
            r = entry["ratio"]
            rows.append((c["dataset"], f"{c['source']} → {c['target']}", _trigger(c),
                         f"{c['architecture']}-{c['width']}" + (f" depth {c['depth']}" if "depth" in c else "")
                         + (f" {c['readout']}" if c.get("readout") else ""),
                         k, _budget(r, "ntba_budget"),
                         _ca(res["per_kernel_method_budget"], f"{k}/ntba/{r['ntba_budget']}", "net_ca"),
                         _budget(r, "sampling_budget", max(c["sampling_budgets"])), _fmt_ratio(r), len(c["seeds"]),
                         _source(path, "kernel_vs_network_asr.png")))
    head = ("| dataset | pair | trigger | victim | kernel | NTBA poisons for 90% | clean acc. there | sampling "
            "| ratio | seeds | source |\n|---|---|---|---|---|---|---|---|---|---|---|")
    return [head] + ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]


def _sec(t: float) -> str:
    return f"{t:.3f} s" if t >= 0.01 else f"{t * 1e3:.1f} ms"


def speed_rows() -> list[str]:
    out = ["| what | measured | source |", "|---|---|---|"]
    k = _load(ROOT / "bench/results/kernels_cpu.json")
    if k:
        for g in k["gradient_ratio"]:
            out.append(f"| loss + gradient / kernel blocks, {g['kernel']}, {g.get('dataset', 'digits')} "
                       f"({g['n_p']} poisons, {g['n_other']} others) | {g['ratio']:.1f}x "
                       f"({_sec(g['loss_grad_s'])} / {_sec(g['kernel_blocks_s'])}"
                       + (f"; VJP alone {_sec(g['vjp_s'])}" if "vjp_s" in g else "") + ") | kernels_cpu.json |")
        big = max(r["n"] for r in k["throughput"])
        thr = ", ".join(f"{r['kernel']} {r['entries_per_s']:.1e}" for r in k["throughput"]
                        if r["n"] == big and r["dtype"] == "float32")
        out.append(f"| kernel entries/s at {big} x {big}, float32 | {thr} | kernels_cpu.json |")
    g = _load(ROOT / "bench/results/greedy_cpu.json")
    if g:
        s = " / ".join(f"{r['speedup']:.0f}x (\\|d\\| = {r['n_d']})" for r in g["rows"])
        same = all(r["same_pick"] for r in g["rows"])
        out.append(f"| greedy round, rank-one vs naive, pool {g['rows'][0]['pool']} | {s}; same picks: {same} "
                   f"| greedy_cpu.json |")
    s = _load(ROOT / "bench/results/scale_cpu.json")
    if s:
        m = s["model"]
        out.append(f"| attack memory ~ a n² + b, time ~ n^k (n = \\|d\\|) | a = {m['bytes_per_entry']:.0f} bytes, "
                   f"b = {m['fixed_mb']:.0f} MB; k = {m['exponent_setup']:.2f} (setup), "
                   f"{m['exponent_step']:.2f} (loss + gradient) | scale_cpu.json |")
        out.append(f"| largest \\|d\\| in {m['memory_budget_gib']:.1f} GiB (90% of RAM), extrapolated from the fit | "
                   f"{m['largest_d']} (setup ≈ {m['predicted_setup_s_at_largest'] / 60:.0f} min) | scale_cpu.json |")
        c = m.get("checked")
        if c:
            out.append(f"| run at \\|d\\| = {c['n']} (95% of it) | peak RSS {c['peak_rss_mb'] / 1024:.1f} GiB "
                       f"(predicted {c['predicted_peak_mb'] / 1024:.1f}), setup {c['setup_s'] / 60:.1f} min, "
                       f"loss + gradient {c['step_s']:.1f} s | scale_cpu.json |")
    t = _load(ROOT / "bench/results/train_cpu.json")
    if t:
        for r in t["rows"]:
            out.append(f"| victim training, {r['case']} ({r['victims']} victims x {r['steps']} steps) | "
                       f"train_many {r['new_gflops']:.0f} GFLOP/s vs one by one {r['old_gflops']:.0f} "
                       f"(speedup {r['speedup']:.1f}x, chunk {r['default_chunk']}); "
                       f"{100 * r['fraction_of_matmul']:.0f}% of a matmul of the victim's shape "
                       f"({r['matmul_victim_gflops']:.0f} GFLOP/s; 2048³: {t['matmul_2048_gflops']:.0f}) "
                       f"| train_cpu.json |")
        sw = t["sweep"]
        out.append(f"| a sweep of {sw['victims']} digits victims to their targets | one by one {sw['old_s']:.0f} s, "
                   f"train_many {sw['new_s']:.0f} s ({sw['speedup']:.1f}x); same stopping steps: "
                   f"{sw['same_stopping_steps']} | train_cpu.json |")
    f = _load(ROOT / "bench/results/figures_cpu.json")
    if f:
        per = ", ".join(f"{k[:2]}: {v:.0f} s" for k, v in f["notebook_seconds"].items())
        jobs = f.get("jobs", 1)
        at_once = "; two notebooks at a time, so each notebook's time is shared" if jobs == 2 else (
            f"; {jobs} notebooks at a time, so each notebook's time is shared" if jobs > 1 else "")
        out.append(f"| `make figures` at defaults, wall time | {f['total_seconds'] / 60:.1f} min ({per}{at_once}) "
                   f"| figures_cpu.json |")
        prof = f.get("notebook_profile")
        if prof:
            cats = {}
            for p in prof.values():
                for k, v in p.items():
                    cats[k] = cats.get(k, 0.0) + v
            split = ", ".join(f"{k} {v:.0f} s" if v >= 1 else f"{k} {v:.2f} s" for k, v in cats.items())
            out.append(f"| `make figures`: where the time goes (all notebooks; work on a study's threads counts as "
                       f"rest) | {split} | figures_cpu.json |")
    a = _load(ROOT / "bench/results/adversarial_cpu.json")
    if a:
        for r in a["rows"]:
            out.append(f"| training-free FGSM, {r['kernel']}, {r['n_train']} training images (32x32x3) | "
                       f"predictor {r['fit_s']:.1f} s, FGSM on {r['n_test']} test images {r['fgsm_s']:.1f} s "
                       f"| adversarial_cpu.json |")
    d = _load(ROOT / "bench/results/defenses_cpu.json")
    if d:
        dets = [r for r in d["rows"] if not r["what"].startswith("I-BAU")]
        ib = [r for r in d["rows"] if r["what"].startswith("I-BAU")]
        out.append(f"| poison detectors on a training set of {dets[0]['n']} points (`ntklib.defenses`) | " +
                   ", ".join(f"{r['what']} {_sec(r['seconds'])}" for r in dets) + " | defenses_cpu.json |")
        for r in ib:
            out.append(f"| {r['what']}, digits MLP 256 x 2, {r['n']} clean images | {_sec(r['seconds'])} "
                       "| defenses_cpu.json |")
    rc = _load(ROOT / "bench/results/reconstruction_cpu.json")
    if rc:
        c = rc["step_cost"]
        out.append(f"| reconstruction attack step, MLP width {c['width']}, {c['n_r']} candidates | "
                   f"{c['attack_step_s'] * 1e3:.1f} ms = {c['ratio']:.1f}x one forward-backward pass over the "
                   f"candidates ({c['forward_backward_s'] * 1e3:.1f} ms) | reconstruction_cpu.json |")
        for r in rc["rows"]:
            steps = sorted(r["by_step"], key=int)
            last = r["by_step"][steps[-1]]
            at = r.get("grad_at", "init" if r["linear"] else "final")
            out.append(f"| reconstruction quality, digits odd vs even, N = {r['n']}, width {r['width']}, "
                       f"{'linearized' if r['linear'] else 'standard'} @ {at}, momentum {r.get('momentum', 0.9)} "
                       f"(train loss {r['train_loss']:.0e}) | mean SSIM "
                       + " → ".join(f"{r['by_step'][s]['ssim']:.2f}" for s in steps)
                       + f" at {', '.join(str(s) for s in steps)} steps; {100 * last['above_0_9']:.0f}% above 0.9; "
                       f"attack {r['attack_s']:.0f} s | reconstruction_cpu.json |")
    v = _load(ROOT / "bench/results/validation_cpu.json")
    if v:
        p, nbs = v["pipeline"], v.get("notebooks") or []
        row = (f"| input checks (`ntklib.validation`) | {p['validation_s']:.2f} s of a {p['wall_s']:.0f} s "
               f"pipeline run at notebook 05's defaults ({100 * p['validation_share']:.2f}%)")
        if nbs:
            worst = max(nbs, key=lambda r: r["share"])
            row += f"; in `make figures` at most {100 * worst['share']:.2f}% of a notebook ({worst['notebook'][:2]})"
        out.append(row + " | validation_cpu.json |")
    return out


def report() -> str:
    return "\n".join([START, "", "**Attack efficiency on trained networks** (ratio = smallest sampling budget "
                      "reaching 90% network ASR / smallest NTBA budget; `≥`: sampling never reached it):", "",
                      *attack_rows(), "", "**Speed and memory** (CPU, this machine):", "", *speed_rows(), "", END])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="rewrite the results block of docs/results.md")
    args = ap.parse_args(argv)
    text = report()
    print(text)
    if args.write:
        readme = ROOT / "docs" / "results.md"
        s = readme.read_text()
        if START not in s or END not in s:
            raise SystemExit(f"{readme} has no {START} ... {END} block to update")
        readme.write_text(s[:s.index(START)] + text + s[s.index(END) + len(END):])
        print(f"{readme} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
