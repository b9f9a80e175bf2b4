"""The NTBA attack (Hayase & Oh 2023) in one namespace: the closed-form backdoor loss, greedy
initialization, poison optimization and the sampling baseline.

The three steps live in their own modules, each with its equations, cost and paper section:

- :mod:`ntklib.backdoor_loss`: the loss L(X_p) of kernel regression on d u p and its
  gradient (``BackdoorProblem``, ``EnsembleProblem``, ``LossResult``);
- :mod:`ntklib.greedy`: greedy selection by rank-one updates (``greedy_init``,
  ``score_candidates``), the exhaustive search and the sampling baseline;
- :mod:`ntklib.poison_optimization`: L-BFGS-B or projected Adam over the pixel box, with
  checkpoints that resume exactly (``optimize_poisons``).

This module re-exports their public names, the ones notebooks and users call
(``attack.greedy_init``, ``attack.BackdoorProblem``, ...).
"""
from __future__ import annotations

from .backdoor_loss import BackdoorProblem, EnsembleProblem, LossResult, check_images
from .greedy import GreedyResult, exhaustive_search, greedy_init, sampling_baseline, score_candidates
from .poison_optimization import CheckpointMismatchError, CheckpointReadError, OptimizeResult, optimize_poisons

__all__ = ["BackdoorProblem", "EnsembleProblem", "LossResult", "GreedyResult", "OptimizeResult", "greedy_init",
           "optimize_poisons", "sampling_baseline", "exhaustive_search", "check_images",
           "CheckpointMismatchError", "CheckpointReadError", "score_candidates"]
