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

from . import validation as _val
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
    p = _val.check_path(path, "path")
    return p.with_suffix("") if p.suffix in (".npz", ".json", ".png") else p


def save_poisons(path, X_p, params: dict, indices=None, grid: bool = True) -> Path:
    """Write ``<stem>.npz``, ``<stem>.json`` and ``<stem>.png``; returns the stem."""
    import matplotlib.pyplot as plt

    stem = _stem(path)
    X_p = _val.check_images(X_p, "X_p (poisons)", allow_empty=True)
    if not isinstance(params, dict):
        raise TypeError(f"params={_val.describe(params)} is invalid: must be a dict of the parameters that made "
                        "the poisons (their provenance)")
    if indices is not None:
        indices = _val.check_int_list(indices, "indices", min=0, allow_empty=True)
        if len(indices) != len(X_p):
            raise ValueError(f"indices holds {len(indices)} entries for {len(X_p)} poisons; give one candidate "
                             "index per poison (or None)")
    _val.check_path(stem, "path", writable=True)
    stem.parent.mkdir(parents=True, exist_ok=True)
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
    npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
    if not npz.exists():
        raise FileNotFoundError(f"no poisons at {npz}; save_poisons(stem, ...) writes <stem>.npz and <stem>.json")
    redo = "Save the poisons again with ntklib.artifacts.save_poisons (or restore both files from where you got them)"
    try:
        with np.load(npz, allow_pickle=False) as z:
            X_p, idx = z["X_p"], z["indices"]
    except Exception as e:
        raise _val.file_error(npz, "poisons saved by save_poisons", e, redo) from e
    if not js.exists():
        raise FileNotFoundError(f"{npz} has no provenance file {js} beside it; poisons always travel with their "
                                f"parameters. {redo}")
    try:
        meta = json.loads(js.read_text())
        if not isinstance(meta, dict) or "params" not in meta:
            raise ValueError("no 'params' entry")
    except Exception as e:
        raise _val.file_error(js, "the provenance of saved poisons", e, redo) from e
    try:
        X_p = _val.check_images(X_p, "X_p", allow_empty=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{npz}: the poisons in this file are not valid images ({e}). {redo}") from None
    expected = (meta.get("n_poisons"), meta.get("image_shape"))
    if expected != (None, None) and (len(X_p), list(X_p.shape[1:])) != (expected[0], expected[1]):
        raise ValueError(f"{npz} holds {len(X_p)} poisons of shape {X_p.shape[1:]}, but {js} describes "
                         f"{expected[0]} of shape {tuple(expected[1] or ())}: the two files do not belong together. "
                         f"{redo}")
    meta["indices"] = idx.tolist()
    return X_p, meta
