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

__all__ = ["set_theme", "savefig", "figure_dir", "save_numbers", "image_grid", "to_jsonable"]

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
