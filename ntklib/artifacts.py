"""Poisons saved with their provenance.

``save_poisons(stem, X_p, params)`` writes ``stem.npz`` (the poisons and their
candidate indices), ``stem.json`` (every parameter that made them, the library
versions and the time) and ``stem.png`` (an image grid). ``load_poisons(stem)``
returns the poisons and the parameters, so figures and evaluations regenerate
without re-optimizing.
"""
from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from .plotting import image_grid, to_jsonable

__all__ = ["save_poisons", "load_poisons", "versions"]


def versions() -> dict:
    """Versions of the packages that determine the numbers."""
    out = {}
    for pkg in ("ntklib", "jax", "jaxlib", "neural-tangents", "numpy", "scipy", "optax"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _stem(path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".npz", ".json", ".png") else p


def save_poisons(path, X_p, params: dict, indices=None, grid: bool = True) -> Path:
    """Write ``<stem>.npz``, ``<stem>.json`` and ``<stem>.png``; returns the stem."""
    import matplotlib.pyplot as plt

    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    X_p = np.asarray(X_p)
    np.savez(stem.with_suffix(".npz"), X_p=X_p,
             indices=np.asarray([] if indices is None else indices, dtype=np.int64))
    meta = dict(params=to_jsonable(params), n_poisons=len(X_p), image_shape=list(X_p.shape[1:]),
                versions=versions(), created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str))
    if grid and len(X_p):
        fig = image_grid(X_p, ncols=min(10, len(X_p)), suptitle=f"{len(X_p)} poisons (label: target)")
        fig.savefig(stem.with_suffix(".png"), bbox_inches="tight")
        plt.close(fig)
    return stem


def load_poisons(path):
    """(X_p, meta) where meta['params'] holds the parameters they were made with."""
    stem = _stem(path)
    if not stem.with_suffix(".npz").exists():
        raise FileNotFoundError(f"no poisons at {stem.with_suffix('.npz')}")
    with np.load(stem.with_suffix(".npz"), allow_pickle=False) as z:
        X_p, idx = z["X_p"], z["indices"]
    meta = json.loads(stem.with_suffix(".json").read_text())
    meta["indices"] = idx.tolist()
    return X_p, meta
