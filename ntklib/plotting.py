"""One seaborn theme, one ``savefig``, and an image-grid helper.

Every figure of the project goes through :func:`savefig`, which writes
``<fig_dir>/<notebook>/<name>.png`` (a relative ``fig_dir`` is taken from the
repository root, so JupyterLab and papermill write to the same place) (and ``.pdf`` on request) and, when given
the numbers behind the figure, writes them beside it as ``<name>.csv`` (a
DataFrame or a dict of equal-length columns) or ``<name>.json`` (anything else
JSON-able).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import matplotlib

# Scripts and tests draw off-screen; inside a Jupyter kernel (JupyterLab, papermill) the
# kernel's inline backend stays, so that the notebooks show their figures.
if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["set_theme", "savefig", "figure_dir", "save_numbers", "save_results", "image_grid", "to_jsonable",
           "grouped_bars", "mean_sd_lines", "asr_vs_budget", "kernel_vs_network", "ratio_curves", "PALETTE"]

PALETTE = {"ntba": "#c0392b", "sampling": "#2c7fb8", "greedy": "#e67e22", "random": "#7f8c8d",
           # kernels used to design poisons (notebook 06)
           "infinite": "#8e44ad", "empirical_init": "#16a085", "empirical": "#c0392b",
           "empirical_ensemble": "#d35400"}


def set_theme():
    """The project's single plotting theme (seaborn ``whitegrid``, paper context)."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="deep",
                  rc={"figure.dpi": 100, "savefig.dpi": 150, "axes.titleweight": "bold"})


def to_jsonable(obj):
    """Convert numpy scalars/arrays (recursively) to plain Python for JSON."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def figure_dir(notebook: str, fig_dir="figures") -> Path:
    """The (created) folder ``<fig_dir>/<notebook>/`` where a notebook's outputs go."""
    if not notebook:
        raise ValueError("savefig needs the notebook name: figures go to <fig_dir>/<notebook>/")
    folder = Path(fig_dir)
    if not folder.is_absolute():  # relative to the repository root, wherever the kernel runs
        folder = Path(__file__).resolve().parent.parent / folder
    folder = folder / notebook
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_numbers(data, name: str, notebook: str, fig_dir="figures") -> Path:
    """Write the numbers behind a figure: CSV for tables, JSON otherwise."""
    import pandas as pd

    folder = figure_dir(notebook, fig_dir)
    if isinstance(data, dict):
        lengths = {len(v) if isinstance(v, (list, tuple, np.ndarray)) and np.ndim(v) == 1 else -1
                   for v in data.values()}
        if len(lengths) == 1 and -1 not in lengths:  # equal-length columns: a table
            data = pd.DataFrame(data)
    if isinstance(data, pd.DataFrame):
        path = folder / f"{name}.csv"
        data.to_csv(path, index=False)
    else:
        path = folder / f"{name}.json"
        path.write_text(json.dumps(to_jsonable(data), indent=2))
    return path


def save_results(results: dict, notebook: str, fig_dir="figures") -> Path:
    """Write a notebook's summary ``results`` (a dict of numbers, lists, tables as records) to
    ``<fig_dir>/<notebook>/results.json`` (numpy values made JSON-able, NaN as null); returns the
    path. ``bench/report.py`` reads these files into docs/results.md."""
    if not isinstance(results, dict):
        raise TypeError(f"results={type(results).__name__} is invalid: must be a dict (of numbers, lists and "
                        "tables as records, e.g. df.to_dict('records'))")
    path = figure_dir(notebook, fig_dir) / "results.json"
    path.write_text(json.dumps(to_jsonable(results), indent=2))
    return path


def grouped_bars(ax, table, category: str, group: str, value: str, categories=None, groups=None,
                 baselines=None, capsize: float = 2):
    """Bars of the mean of ``value`` per (``category`` on the x axis, ``group`` side by side), with
    the standard deviation over the rows of each pair as error bar (0 for a single row).
    ``categories`` and ``groups`` fix the orders (default: as they first appear); ``baselines``
    {group: y} draws each group's reference level as a dashed line in its colour. Returns the
    (len(categories), len(groups)) table of means."""
    categories = list(dict.fromkeys(table[category])) if categories is None else list(categories)
    groups = list(dict.fromkeys(table[group])) if groups is None else list(groups)
    stats = table.groupby([category, group])[value].agg(["mean", "std"])
    mean = stats["mean"].unstack(group).reindex(index=categories, columns=groups)
    sd = stats["std"].unstack(group).reindex(index=categories, columns=groups).fillna(0.0)
    w = 0.8 / len(groups)
    x = np.arange(len(categories))
    for i, g in enumerate(groups):
        ax.bar(x + (i - (len(groups) - 1) / 2) * w, mean[g], w, yerr=sd[g], label=str(g), capsize=capsize,
               color=f"C{i}")
        if baselines is not None and g in baselines:
            ax.axhline(baselines[g], color=f"C{i}", ls="--", lw=1)
    ax.set_xticks(x, [str(c) for c in categories], rotation=30, ha="right")
    return mean


def mean_sd_lines(ax, table, x: str, value: str, group: str, groups=None, capsize: float = 2):
    """One line per ``group`` (in the order of ``groups``, default as they first appear, colours
    C0, C1, ...): the mean of ``value`` at each ``x`` (sorted), with the standard deviation over the
    rows there as error bar (0 for a single row). Returns {group: the Series of means}."""
    groups = list(dict.fromkeys(table[group])) if groups is None else list(groups)
    out = {}
    for k, g in enumerate(groups):
        at = table[table[group] == g].groupby(x)[value]
        out[g] = at.mean()
        ax.errorbar(out[g].index, out[g], at.std().fillna(0.0), marker="o", label=str(g), capsize=capsize,
                    color=f"C{k}")
    return out


def _color(name, i: int):
    return PALETTE.get(name, f"C{i}")


def asr_vs_budget(ax, table, group: str, value: str = "net_asr", asr_level: float | None = None, colors=None,
                  label_sampling: bool = True):
    """Attack success against the number of poisons, one colour per value of ``group`` (in order of
    appearance; ``colors`` {group: colour}, default :data:`PALETTE` or C0, C1, ...; the group "-",
    the sampling baseline's rows in a kernel comparison, in sampling's colour): per group its
    NTBA rows (``method`` "ntba") as a solid line with circles, its sampling rows as a dashed line
    with squares; the budget axis logarithmic; ``asr_level`` a dotted horizontal line. ``table``:
    one row per (group, method, budget), e.g. means over seeds. ``label_sampling=False`` keeps the
    sampling lines out of the legend (say what dashes mean in the title instead)."""
    colors = colors or {}
    for i, (name, d) in enumerate(table.groupby(group, sort=False)):
        for method, style in (("ntba", "o-"), ("sampling", "s--")):
            m = d[d.method == method].sort_values("budget")
            if len(m):
                label = f"{'NTBA' if method == 'ntba' else 'sampling'}" + (f", {name}" if name != "-" else "")
                color = colors.get(name, _color("sampling" if name == "-" else name, i))
                ax.plot(m.budget, m[value], style, color=color,
                        label=label if method == "ntba" or label_sampling else None)
    if asr_level is not None:
        ax.axhline(asr_level, color="k", lw=0.8, ls=":")
    ax.set(xscale="log", xlabel="number of poisons", ylabel="trained-network ASR (test)", ylim=(-0.02, 1.02))


def kernel_vs_network(ax, summary, kernels):
    """Kernel-model ASR (x) against trained-network ASR (y) of NTBA's poisons, one line per kernel
    (rows of ``summary`` with kernel, method "ntba", budget, kernel_asr, net_asr), each point
    labelled with its budget, and the diagonal where the kernel predicts the network."""
    for i, k in enumerate(kernels):
        d = summary[(summary.kernel == k) & (summary.method == "ntba")]
        ax.plot(d.kernel_asr, d.net_asr, marker="o", color=_color(k, i), label=k)
        for _, r in d.iterrows():
            ax.annotate(str(int(r.budget)), (r.kernel_asr, r.net_asr), textcoords="offset points", xytext=(4, -10),
                        fontsize=8)
    ax.plot([0, 1], [0, 1], color="k", lw=0.8, ls=":")
    ax.set(xlabel="kernel-model ASR (attack set a)", ylabel="trained-network ASR (test)", xlim=(-0.02, 1.02),
           ylim=(-0.02, 1.02))


def ratio_curves(ax, curves: dict, target: float | None = 10.0, level: float | None = None):
    """The poison-efficiency ratio against the ASR level it is read at, one line per entry of
    ``curves`` ({name: :func:`ntklib.evaluate.ratio_curve`'s dicts}): filled markers where both
    attacks reach the level, open ones where sampling never does (the ratio is a lower bound);
    levels NTBA never reaches are left out. ``target``: the paper's ratio, dotted; ``level``: the
    level the notebook reports, dashed. Logarithmic ratio axis."""
    for i, (name, rs) in enumerate(curves.items()):
        rs = [r for r in rs if r["ratio"] is not None]
        c = _color(name, i)
        x, y = [r["level"] for r in rs], [r["ratio"] for r in rs]
        ax.plot(x, y, color=c, label=name)
        ax.scatter(x, y, color=["white" if r["lower_bound"] else c for r in rs], edgecolor=c, zorder=3)
    if target is not None:
        ax.axhline(target, color="k", lw=0.8, ls=":")
    if level is not None:
        ax.axvline(level, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="network ASR level", ylabel="poison-efficiency ratio (sampling / NTBA)", yscale="log")


def savefig(fig, name: str, notebook: str, fig_dir="figures", data=None, pdf: bool = False):
    """Save ``fig`` as ``<fig_dir>/<notebook>/<name>.png`` (and ``.pdf`` if asked).

    ``data``: the numbers plotted, saved beside the figure (see :func:`save_numbers`).
    Returns the list of written paths.
    """
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"fig={fig!r:.60} is invalid: must be a matplotlib Figure (fig, ax = plt.subplots())")
    for label, value in (("name", name), ("notebook", notebook)):
        if not isinstance(value, str) or not value or "/" in value:
            raise ValueError(f"{label}={value!r} is invalid: must be a non-empty file name without '/'")
    folder = figure_dir(notebook, fig_dir)
    fig.tight_layout()
    paths = [folder / f"{name}.png"]
    fig.savefig(paths[0], bbox_inches="tight")
    if pdf:
        paths.append(folder / f"{name}.pdf")
        fig.savefig(paths[-1], bbox_inches="tight")
    if data is not None:
        paths.append(save_numbers(data, name, notebook, fig_dir))
    return paths


def image_grid(images, ncols: int = 8, titles=None, cmap="gray", scale: float = 1.2,
               suptitle=None, vmin=0.0, vmax=1.0):
    """A grid of images (n, H, W, C) with C in {1, 3}; returns the figure.

    For difference images pass ``vmin``/``vmax`` symmetric around 0 and a
    diverging ``cmap``.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"image_grid expects (n, H, W, 1 or 3), got {images.shape}")
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        img = images[k]
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap=cmap, vmin=vmin, vmax=vmax)
        else:
            ax.imshow(np.clip((img - vmin) / (vmax - vmin), 0, 1))
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig
