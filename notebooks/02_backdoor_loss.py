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
# # 02 · The closed-form backdoor loss
#
# **What this shows.** A backdoor attack is a *bilevel* problem: the attacker
# chooses poisons $X_p$ (labelled target, $+1$); the victim then trains on
# $d \cup p$; the attacker wants the trained model to stay accurate on clean data
# and to send triggered source images to the target. The inner problem — training —
# is what makes this hard. If training is kernel regression with the network's NTK
# (notebook 01), the inner problem has a closed form:
#
# $$ f(x) = K(x, X_{dp})\,(K_{dp,dp} + \lambda I)^{-1} y_{dp}, $$
#
# and the attacker's objective becomes an explicit, differentiable function of $X_p$:
#
# $$ \mathcal L(X_p) = \underbrace{\sum_{t}(f(x_t) - y_t)^2}_{\text{clean accuracy}}
#   + \underbrace{\sum_{a}\min(f(x_a) - 1, 0)^2}_{\text{attack (squared hinge)}} . $$
#
# $t$ and $a$ are held-out *training* images (the attacker has no test data): $t$
# clean, $a$ source images with the trigger. Here we look at the two terms, at the
# simplest attack — *sampling*: add $b$ random triggered source images labelled $+1$ —
# and at what the squared hinge asks of the predictions.
#
# **Runtime** at defaults: about 20 s on 2 CPU cores (`smoke=True`: ~10 s).
#
# **ntklib used:** `pipeline.prepare`, `attack.BackdoorProblem` (loss),
# `attack.sampling_baseline`, `attack.greedy_init`, `plotting.savefig`, `plotting.image_grid`.

# %%
import os

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
budgets = [1, 2, 5, 10, 20, 50]  # numbers of poisons
seeds = [0, 1, 2, 3, 4]     # random subsets of the sampling attack
hinge_budget = 5            # the budget of the prediction-distribution figure
task_kw = {}                # sizes passed to ntklib.data.make_task (n_train_per_class, n_pool, ...)
seed = 0                    # the task's split
smoke = False               # True: tiny sizes (the smoke values of ntklib.params), seconds per notebook
fig_dir = "figures"         # outputs go to <fig_dir>/<notebook>/ (relative: to the repository root)

# %%
NB = "02_backdoor_loss"
globals().update(params.resolve(NB, globals()))  # every parameter checked; smoke sizes if smoke
plotting.set_theme()
exp = pipeline.prepare(dataset, source, target, trigger, architecture, width, kernel=kernel, seed=seed,
                       task_kw=task_kw, smoke=smoke)
task, problem = exp.task, exp.problem
m = len(task.X_cand)
budgets = [b for b in budgets if b <= m]
print(task.summary())
print("kernel:", exp.kernel)

# %% [markdown]
# ## The trigger
#
# Source images, the same images with the trigger (the set $a$), and the trigger
# itself (their difference). Poison candidates are triggered source images
# relabelled as target.

# %%
k = min(6, len(task.X_a))
src = task.X_t[task.y_t < 0][:k]
imgs = np.concatenate([src, task.X_a[:k], 0.5 + (task.X_a[:k] - src) / 2])
titles = ["source"] * k + ["triggered"] * k + ["difference"] * k
fig = plotting.image_grid(imgs, ncols=k, titles=titles)
plotting.savefig(fig, "trigger", NB, fig_dir, data=dict(trigger=task.trigger.spec));

# %% [markdown]
# ## The sampling attack under the kernel model
#
# For each budget and seed: add $b$ random candidates, solve the kernel regression
# in closed form, and read off clean accuracy on $t$ (sign of $f$) and attack
# success rate on $a$ (fraction with $f > 0$).

# %%
rows = []
for b in [0] + budgets:
    for s in (seeds if b else seeds[:1]):
        idx = attack.sampling_baseline(m, b, seed=s)
        r = problem.loss(task.X_cand[idx])
        rows.append(dict(budget=b, seed=s, **r.as_dict()))
samp = pd.DataFrame(rows)
agg = samp.groupby("budget").agg(["mean", "std"])
print(agg[["asr", "clean_acc", "clean_loss", "attack_loss"]].round(3).to_string())

fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
g = samp.groupby("budget")
for col, label, ax in [("asr", "attack success rate on a", axes[0]), ("clean_acc", "clean accuracy on t", axes[0])]:
    ax.errorbar(g[col].mean().index, g[col].mean(), yerr=g[col].std(ddof=0), marker="o", capsize=3, label=label)
axes[0].set(xscale="symlog", xlabel="number of poisons (sampling)", ylabel="fraction", ylim=(-0.02, 1.02),
            title="kernel model: sampling attack")
axes[0].legend()
for col, label in [("clean_loss", "clean term"), ("attack_loss", "attack term (hinge)")]:
    axes[1].errorbar(g[col].mean().index, g[col].mean(), yerr=g[col].std(ddof=0), marker="o", capsize=3, label=label)
axes[1].set(xscale="symlog", yscale="log", xlabel="number of poisons (sampling)", ylabel="loss term",
            title="the two terms of L")
axes[1].legend()
plotting.savefig(fig, "sampling_kernel_asr_ca", NB, fig_dir, data=samp);

# %% [markdown]
# ## What the squared hinge does
#
# The attack term $\min(f(x_a) - 1, 0)^2$ is zero once a triggered image is predicted
# at $+1$ or beyond, and grows quadratically below: it pulls every triggered image
# *past* the decision boundary with margin 1, and ignores those already there (a
# squared loss would also pull down the ones above 1). Below: $f(x_a)$ with no
# poisons, with random poisons, and with as many poisons picked to minimize
# $\mathcal L$ (the greedy selection of notebook 03).

# %%
b = min(hinge_budget, m)
before = problem.loss(task.X_cand[:0])
rand = problem.loss(task.X_cand[attack.sampling_baseline(m, b, seed=seeds[0])])
greedy = attack.greedy_init(problem, task.X_cand, b, progress=False)
chosen = problem.loss(task.X_cand[greedy.indices])
fig, ax = plt.subplots(figsize=(6, 3.6))
bins = np.linspace(min(before.f_a.min(), -1.5), max(chosen.f_a.max(), rand.f_a.max(), 1.5), 30)
for r, label, color in [(before, "no poisons", "0.5"), (rand, f"{b} random poisons", plotting.PALETTE["sampling"]),
                        (chosen, f"{b} greedy poisons", plotting.PALETTE["ntba"])]:
    ax.hist(r.f_a, bins=bins, alpha=0.55, color=color, label=f"{label}: ASR {r.asr:.2f}, hinge {r.attack_loss:.1f}")
ax.axvline(0, color="k", lw=1)
ax.axvline(1, color="k", lw=1, ls="--")
ax.text(1.02, ax.get_ylim()[1] * 0.9, "margin 1", fontsize=8)
ax.set(xlabel="kernel-model prediction f(x_a) on triggered source images", ylabel="count",
       title="the squared hinge pushes f(x_a) past 1")
ax.legend(fontsize=8)
plotting.savefig(fig, "hinge_prediction_distribution", NB, fig_dir,
                 data={"no_poisons": before.f_a, "random": rand.f_a, "greedy": chosen.f_a});
