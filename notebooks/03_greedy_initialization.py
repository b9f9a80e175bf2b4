# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Greedy initialization with rank-one updates
#
# **What this shows.** NTBA starts its optimization from poisons *chosen* among the
# candidates (triggered source images labelled $+1$): one at a time, each round adding
# the candidate that lowers $\mathcal L$ most (paper App. B.2). Scoring $m$
# candidates naively costs $m$ solves of an $(n+1)\times(n+1)$ system per round. The
# Schur complement makes each score closed-form.
#
# **The rank-one update.** Let $A = K_{DD} + sI$ on the current training set $D$,
# $\alpha = A^{-1} y_D$, and append a candidate $c$ with label $y_c$. Write
# $v = A^{-1}k_{Dc}$ and $\sigma = k_{cc} + s - k_{cD}v$ (the Schur complement). Block
# inversion of $\begin{pmatrix} A & k_{Dc} \\ k_{cD} & k_{cc}+s \end{pmatrix}$ gives
#
# $$ f'(x) = f(x) + \big(k_{xc} - k_{xD}\,v\big)\,\frac{y_c - f(c)}{\sigma}, \qquad f(c) = k_{cD}\alpha . $$
#
# All candidates share $A$: one multi-right-hand-side solve $A^{-1}K_{Dc}$ scores all of
# them in $O(n^2 m + n_x n m)$ instead of $O(m n^3)$. After picking, the Cholesky factor
# of $A$ grows by one row in $O(n^2)$. (`ntklib.regression.append_predictions`,
# `ntklib.attack.greedy_init`.)
#
# **Runtime** at defaults: about 20 s on 2 CPU cores (`smoke=True`: ~10 s).
#
# **ntklib used:** `attack.score_candidates`, `attack.greedy_init`, `attack.sampling_baseline`,
# `pipeline.prepare`, `plotting.savefig`.

# %%
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ntklib import attack, params, pipeline, plotting

# %% tags=["parameters"]
dataset = "digits"          # digits | cifar10 (CIFAR-10 from data/ or $NTKLIB_DATA_DIR)
source = 7                  # source class (label -1): its triggered images should be classified as target
target = 1                  # target class (label +1)
trigger = "periodic"        # periodic | patch
architecture = "mlp"        # mlp | cnn | wide_resnet, or their plain-JAX twins plain_mlp | plain_cnn | ...
width = 512                 # hidden units (mlp), channels (cnn), 16 x the widening factor (wide_resnet)
# kernel: the poisons' kernel: empirical (the clean victim's, the paper's) | empirical_init | infinite
kernel = "infinite"
budgets = [1, 2, 3, 5, 10, 20]  # greedy runs to the largest; curves at every budget up to it
seeds = [0, 1, 2, 3, 4]     # random selections to compare with
timing_sizes = [25, 50, 100]  # training images per class of the timing study
swap_budget = 3             # the budget of the swap-refinement demo
task_kw = {}                # sizes passed to ntklib.data.make_task (n_train_per_class, n_pool, ...)
seed = 0                    # the task's split
smoke = False               # True: tiny sizes (the smoke values of ntklib.params), seconds per notebook
fig_dir = "figures"         # outputs go to <fig_dir>/<notebook>/ (relative: to the repository root)

# %%
NB = "03_greedy_initialization"
globals().update(params.resolve(NB, globals()))  # every parameter checked; smoke sizes if smoke
plotting.set_theme()
exp = pipeline.prepare(dataset, source, target, trigger, architecture, width, kernel=kernel, seed=seed,
                       task_kw=task_kw, smoke=smoke)
task, problem = exp.task, exp.problem
m = len(task.X_cand)
budgets = [b for b in budgets if b <= m]
blocks = problem.candidate_blocks(task.X_cand)   # one kernel call for the whole pool
print(task.summary())

# %% [markdown]
# ## Check: rank-one scores equal full re-solves
#
# Score every candidate both ways — closed form, and a fresh Cholesky factorization of
# the enlarged system per candidate — after a few picks, and compare.

# %%
chosen = attack.greedy_init(problem, task.X_cand, 2, progress=False, blocks=blocks).indices
_, fast = attack.score_candidates(problem, task.X_cand, chosen, "rank_one", blocks=blocks)
_, slow = attack.score_candidates(problem, task.X_cand, chosen, "naive", blocks=blocks)
check = dict(candidates=len(fast), max_abs_diff=float(np.max(np.abs(fast - slow))),
             max_rel_diff=float(np.max(np.abs(fast - slow) / np.abs(slow))))
print(check)
assert check["max_rel_diff"] < 1e-8
plotting.save_numbers(check, "rank_one_check", NB, fig_dir);

# %% [markdown]
# ## Greedy vs random selection
#
# Greedy picks are nested (the first $b$ picks are the greedy answer for budget $b$), so
# one run gives the whole curve. Random selection is the sampling attack.

# %%
g = attack.greedy_init(problem, task.X_cand, max(budgets), progress=False, blocks=blocks)
rows = [dict(method="greedy", budget=b, seed=0, loss=g.losses[b - 1], asr=g.asr[b - 1],
             clean_acc=g.clean_acc[b - 1]) for b in budgets]
for b in budgets:
    for s in seeds:
        r = problem.loss(task.X_cand[attack.sampling_baseline(m, b, seed=s)])
        rows.append(dict(method="random", budget=b, seed=s, loss=r.loss, asr=r.asr, clean_acc=r.clean_acc))
sel = pd.DataFrame(rows)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
for meth in ["greedy", "random"]:
    d = sel[sel.method == meth].groupby("budget")
    for ax, col in zip(axes, ["loss", "asr"], strict=True):
        ax.errorbar(d[col].mean().index, d[col].mean(), yerr=d[col].std(ddof=0).fillna(0), marker="o", capsize=3,
                    color=plotting.PALETTE[meth], label=meth)
axes[0].set(xscale="log", yscale="log", xlabel="number of poisons", ylabel=r"backdoor loss $\mathcal{L}$",
            title="loss")
axes[1].set(xscale="log", xlabel="number of poisons", ylabel="kernel-model ASR on a", ylim=(-0.02, 1.02),
            title="attack success (kernel model)")
for ax in axes:
    ax.legend()
plotting.savefig(fig, "greedy_vs_random", NB, fig_dir, data=sel)
print(sel.groupby(["method", "budget"])[["loss", "asr", "clean_acc"]].mean().round(3).to_string())

# %% [markdown]
# ## Swap refinement
#
# Greedy is myopic. A swap pass replaces a chosen poison by an unchosen candidate while
# that lowers $\mathcal L$ (each swap scored with the same rank-one update).

# %%
b = min(swap_budget, m)
plain = attack.greedy_init(problem, task.X_cand, b, progress=False, blocks=blocks)
swapped = attack.greedy_init(problem, task.X_cand, b, swap=True, progress=False, blocks=blocks)
swap = dict(budget=b, greedy_loss=plain.losses[-1], greedy_asr=plain.asr[-1], swap_loss=swapped.losses[-1],
            swap_asr=swapped.asr[-1], swaps=swapped.swaps)
print(swap)
plotting.save_numbers(swap, "swap_refinement", NB, fig_dir);

# %% [markdown]
# ## Time: rank-one scoring vs naive re-solves
#
# One greedy round over the whole pool for growing clean sets d.

# %%
rows = []
for n in timing_sizes:
    e = pipeline.prepare(dataset, source, target, trigger, architecture, width, kernel=kernel, seed=seed,
                         task_kw=dict(task_kw, n_train_per_class=n), progress=False, smoke=smoke)
    bl = e.problem.candidate_blocks(e.task.X_cand)
    for meth in ["rank_one", "naive"]:
        t0 = time.perf_counter()
        attack.score_candidates(e.problem, e.task.X_cand, [], meth, blocks=bl)
        rows.append(dict(n_d=len(e.task.X_d), candidates=len(e.task.X_cand), method=meth,
                         seconds=time.perf_counter() - t0))
timing = pd.DataFrame(rows)
wide = timing.pivot(index="n_d", columns="method", values="seconds")
wide["speedup"] = wide["naive"] / wide["rank_one"]
print(wide.round(4).to_string())
fig, ax = plt.subplots(figsize=(5, 3.6))
for meth, color in [("naive", plotting.PALETTE["random"]), ("rank_one", plotting.PALETTE["ntba"])]:
    d = timing[timing.method == meth]
    ax.plot(d.n_d, d.seconds, marker="o", color=color, label=meth.replace("_", "-"))
ax.set(xscale="log", yscale="log", xlabel="clean training set size |d|",
       ylabel="seconds per greedy round", title="scoring every candidate once")
ax.legend()
plotting.savefig(fig, "scoring_time", NB, fig_dir, data=timing);
