"""ntklib: few-shot backdoor attacks designed with neural tangent kernels.

Reproduces NTBA (Hayase & Oh, "Few-shot Backdoor Attacks via Neural Tangent
Kernels", ICLR 2023, arXiv:2210.05929). Modules, one job each:

- ``data``        datasets (embedded digits, CIFAR-10) and the binary attack task
- ``triggers``    periodic, patch and custom triggers
- ``models``      architectures (finite network + infinite-width kernel)
- ``train``       finite-network training with squared loss
- ``kernels``     one kernel interface: infinite NTK/NNGP, empirical NTK, user
- ``regression``  kernel regression and its rank-one (Schur) update
- ``backdoor_loss`` the closed-form backdoor loss and its gradient
- ``greedy``      greedy initialization (rank-one updates), exhaustive search, sampling
- ``poison_optimization`` L-BFGS-B / projected Adam over the pixel box, checkpointed
- ``attack``      the three steps above in one namespace
- ``evaluate``    kernel-model and trained-network metrics, budget sweeps
- ``adversarial`` training-free adversarial examples and eigen-features of the kernel predictor
- ``artifacts``   saving and loading poisons with their provenance
- ``plotting``    one theme, ``savefig`` and image grids
- ``cache``       content-addressed cache of trained victims and poisons
- ``profiling``   wall time per kind of work (victims, kernels, greedy, optimization)
- ``validation``  the input checks every public function calls first
- ``params``      each notebook's parameters, declared once (default, rule, smoke value, doc)

Precision: kernels and networks compute in float32 by default (float64 on
request, inside a scoped x64 context: ntklib never sets ``jax_enable_x64``
globally); the linear algebra of the attack (Cholesky, solves, gradients with
respect to kernel blocks) is done in NumPy float64. Submodules are imported
lazily, so ``import ntklib`` is cheap and never imports
neural-tangents or TensorFlow.
"""
from __future__ import annotations

import importlib

from . import _xla

_xla.configure()  # before JAX creates its CPU backend: see ntklib/_xla.py

__version__ = "0.1.0"

_SUBMODULES = (
    "data", "triggers", "models", "train", "kernels", "regression", "backdoor_loss", "greedy",
    "poison_optimization", "attack",
    "evaluate", "artifacts", "plotting", "pipeline", "cache", "profiling", "validation", "adversarial", "book",
    "defenses", "unlearning", "defense_study", "reconstruction", "params",
)

__all__ = list(_SUBMODULES) + ["__version__"]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"ntklib.{name}")
    raise AttributeError(f"module 'ntklib' has no attribute {name!r}")
