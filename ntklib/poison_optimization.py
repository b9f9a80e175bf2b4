"""Poison optimization (Hayase & Oh 2023, App. B.1.2 and B.3): the backdoor loss of
:mod:`ntklib.backdoor_loss` minimized over the poisons' pixels in the box [0, 1], from the
greedy picks, by L-BFGS-B (the reference's optimizer, 100 correction pairs) or projected Adam,

    X_p <- clip(X_p - lr * m_hat / (sqrt(v_hat) + eps), 0, 1),

with checkpoints that resume exactly (an interrupted run and an uninterrupted one take the
same path). Cost per step: one loss and gradient evaluation (see :mod:`ntklib.backdoor_loss`).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import optimize as _sopt
from tqdm.auto import tqdm

from . import backdoor_loss as _loss
from . import profiling as _profiling
from . import validation as _val

__all__ = ["OptimizeResult", "optimize_poisons", "CheckpointMismatchError", "CheckpointReadError"]


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a run with different parameters."""


class CheckpointReadError(ValueError):
    """A checkpoint file exists but cannot be read (damaged, truncated, or not a checkpoint)."""


@dataclass
class OptimizeResult:
    X_p: np.ndarray
    history: dict                 # step, loss, asr, clean_acc (per iteration, step 0 = start)
    start: _loss.LossResult
    final: _loss.LossResult
    steps: int
    converged: bool = False
    message: str = ""             # why L-BFGS-B stopped early when it failed (empty otherwise)


def _fingerprint(problem, X_p0, settings) -> dict:
    fp = problem.fingerprint()
    fp["X_p0"] = hashlib.sha256(np.ascontiguousarray(X_p0, dtype=np.float64).tobytes()).hexdigest()[:16]
    fp.update({k: settings[k] for k in sorted(settings)})
    return {k: str(v) for k, v in fp.items()}


def _save_checkpoint(path: Path, fp, state: dict):
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        np.savez(tmp, __fingerprint__=np.array(json.dumps(fp)),
                 **{k: np.asarray(v) for k, v in state.items()})
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written checkpoint behind
        raise


_CHECKPOINT_KEYS = ("x", "step", "converged", "adam_m", "adam_v", "hist_step", "hist_loss", "hist_asr",
                    "hist_clean_acc")


def _load_checkpoint(path: Path, fp, size: int):
    try:
        with np.load(path, allow_pickle=False) as z:
            saved = json.loads(str(z["__fingerprint__"]))
            state = {k: z[k] for k in z.files if k != "__fingerprint__"}
        missing = [k for k in _CHECKPOINT_KEYS if k not in state]
        if missing:
            raise KeyError(f"missing {missing}")
        if state["x"].shape != (size,) or not np.all(np.isfinite(state["x"])):
            raise ValueError(f"its poisons have {state['x'].shape[0] if state['x'].ndim else 0} values "
                             f"(expected {size}) or are not finite")
    except Exception as e:
        raise CheckpointReadError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); it is damaged or was not written by "
            "optimize_poisons. It was left as it is: pass resume=False to start afresh (the file is overwritten "
            "at the first checkpoint), or choose another checkpoint path.") from e
    diff = sorted(k for k in set(saved) | set(fp) if saved.get(k) != fp.get(k))
    if diff:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written with different parameters ({', '.join(diff)} "
            "differ). Delete it, choose another checkpoint path, or pass resume=False.")
    return state


@_profiling.profiled("optimization")
def optimize_poisons(problem: _loss.BackdoorProblem, X_p0, method: str = "lbfgsb", steps: int = 100,
                     lr: float = 0.01, memory: int = 100, checkpoint=None, checkpoint_every: int = 25,
                     resume: bool = True, progress: bool = True, bad_checkpoint: str = "raise") -> OptimizeResult:
    """Minimize L(X_p) over the pixel box [0, 1] starting from ``X_p0``.

    ``method="lbfgsb"``: scipy's L-BFGS-B with box bounds and ``memory``
    correction pairs (the reference uses 100). It is restarted every
    ``checkpoint_every`` iterations (its curvature memory starts afresh), so that
    a run resumed from a checkpoint takes exactly the path of an uninterrupted
    one. ``method="adam"``: projected Adam (step ``lr``, then clip to [0, 1]);
    its full state is checkpointed.

    ``checkpoint``: path of an ``.npz`` written every ``checkpoint_every``
    steps; with ``resume=True`` an existing checkpoint from the same problem and
    settings is continued (``CheckpointMismatchError`` otherwise). ``steps`` is
    the total iteration budget, so rerunning with a larger one continues.
    ``bad_checkpoint``: what to do with a checkpoint that cannot be read or belongs to
    other settings: ``"raise"`` (the default: the file is the caller's, left as it is) or
    ``"set_aside"`` (renamed to ``<name>.damaged``, with a warning, and the optimization
    starts afresh; for checkpoints whose path the caller did not choose, e.g. the cache's).
    """
    _loss.check_problem(problem)
    _val.check_choice(method, "method", ("lbfgsb", "adam"))
    steps = _val.check_steps(steps, "steps", min=0)
    checkpoint_every = _val.check_steps(checkpoint_every, "checkpoint_every")
    if method == "adam":
        lr = _val.check_lr(lr)
    else:
        memory = _val.check_int(memory, "memory", min=1, hint="L-BFGS-B's number of correction pairs (the "
                                "reference uses 100)")
    resume = _val.check_bool(resume, "resume")
    _val.check_choice(bad_checkpoint, "bad_checkpoint", ("raise", "set_aside"))
    if checkpoint is not None:
        checkpoint = _val.check_path(checkpoint, "checkpoint", suffixes=(".npz",), writable=True)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)  # now, not after the first segment's work
    X_p0 = problem.check_poisons(X_p0).astype(np.float64)
    if len(X_p0) == 0:
        raise ValueError("no poisons to optimize (X_p0 is empty)")
    shape = X_p0.shape
    settings = dict(method=method, lr=lr if method == "adam" else None,
                    memory=memory if method == "lbfgsb" else None, checkpoint_every=checkpoint_every)
    fp = _fingerprint(problem, X_p0, settings)
    ckpt = Path(checkpoint) if checkpoint is not None else None

    start = problem.loss(X_p0)
    x, step, converged, message = X_p0.ravel().copy(), 0, False, ""
    hist = {"step": [0], "loss": [start.loss], "asr": [start.asr], "clean_acc": [start.clean_acc]}
    adam = {"m": np.zeros_like(x), "v": np.zeros_like(x)}
    st = None
    if ckpt is not None and resume and ckpt.exists():
        try:
            st = _load_checkpoint(ckpt, fp, x.size)
            if int(st["step"]) > steps:
                raise CheckpointMismatchError(
                    f"checkpoint {ckpt} is at step {int(st['step'])}, past the steps={steps} asked for (a checkpoint "
                    "holds only its last iterate, so the run cannot be stopped earlier). Pass "
                    f"steps>={int(st['step'])} to go on from it, resume=False to start afresh, or another checkpoint "
                    "path")
        except (CheckpointReadError, CheckpointMismatchError) as e:
            if bad_checkpoint == "raise":
                raise
            aside = ckpt.with_name(ckpt.name + ".damaged")
            os.replace(ckpt, aside)
            warnings.warn(f"{str(e).split('; ')[0].split(' (')[0]} could not be resumed ({type(e).__name__}); it was "
                          f"moved to {aside} and the optimization starts afresh", stacklevel=2)
    if st is not None:
        x, step, converged = st["x"].astype(np.float64), int(st["step"]), bool(st["converged"])
        message = str(st["message"]) if "message" in st else ""
        hist = {k: list(st[f"hist_{k}"]) for k in hist}
        adam = {"m": st["adam_m"], "v": st["adam_v"]}

    cache = {}

    def fun(z):
        res, g = problem.evaluate(z.reshape(shape), grad=True)
        cache["x"], cache["res"] = z.copy(), res
        return res.loss, g.ravel()

    def record(z):
        res = cache["res"] if "x" in cache and np.array_equal(cache["x"], z) else problem.loss(z.reshape(shape))
        hist["step"].append(step)
        hist["loss"].append(res.loss)
        hist["asr"].append(res.asr)
        hist["clean_acc"].append(res.clean_acc)

    def save():
        if ckpt is not None:
            _save_checkpoint(ckpt, fp, dict(x=x, step=step, converged=converged, message=message, adam_m=adam["m"],
                                            adam_v=adam["v"], **{f"hist_{k}": v for k, v in hist.items()}))

    bar = tqdm(total=steps, initial=min(step, steps), desc=f"optimize ({method})", disable=not progress,
               leave=False)
    bounds = _sopt.Bounds(np.zeros_like(x), np.ones_like(x))
    count = [0]  # L-BFGS-B iterations in the current segment
    while step < steps and not converged and not message:
        seg = min(checkpoint_every - step % checkpoint_every, steps - step)
        if method == "lbfgsb":
            count[0] = 0

            def callback(intermediate_result):  # scipy passes the iterate by this parameter's name
                nonlocal step
                step += 1
                count[0] += 1
                record(intermediate_result.x)
                bar.update(1)
                bar.set_postfix(loss=f"{hist['loss'][-1]:.4g}", asr=f"{hist['asr'][-1]:.2f}")

            r = _sopt.minimize(fun, x, jac=True, method="L-BFGS-B", bounds=bounds, callback=callback,
                               options=dict(maxcor=memory, maxiter=seg, maxfun=20 * seg + 20))
            x = np.clip(r.x, 0.0, 1.0)
            # scipy's status: 0 converged, 1 iteration or evaluation limit (the segment's end),
            # 2 stopped for another reason (e.g. the line search failed): say why, never "converged"
            converged = r.status == 0 and count[0] < seg
            if r.status not in (0, 1):
                message = f"L-BFGS-B stopped at step {step}: {r.message}"
                warnings.warn(message + " (the poisons of its last iterate are returned)", stacklevel=2)
        else:
            b1, b2, eps = 0.9, 0.999, 1e-8
            for _ in range(seg):
                _, g = fun(x)
                step += 1
                adam["m"] = b1 * adam["m"] + (1 - b1) * g
                adam["v"] = b2 * adam["v"] + (1 - b2) * g * g
                mh, vh = adam["m"] / (1 - b1 ** step), adam["v"] / (1 - b2 ** step)
                x = np.clip(x - lr * mh / (np.sqrt(vh) + eps), 0.0, 1.0)
                record(x)
                bar.update(1)
                bar.set_postfix(loss=f"{hist['loss'][-1]:.4g}", asr=f"{hist['asr'][-1]:.2f}")
        save()
    bar.close()
    X_p = x.reshape(shape)
    final = problem.loss(X_p)
    return OptimizeResult(X_p, {k: np.asarray(v) for k, v in hist.items()}, start, final, step, converged,
                          message)
