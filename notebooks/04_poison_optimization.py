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
# # 04 · Optimizing the poisons in pixel space
#
# **What this shows.** Starting from the greedy poisons (notebook 03), NTBA minimizes
# $\mathcal L(X_p)$ over the poison *pixels*, inside the valid image box $[0, 1]$, with
# L-BFGS-B (paper App. B.1.2; memory 100 in the reference). The gradient flows from
# $\mathcal L$ to the four kernel blocks that involve the poisons
# ($K_{pd}, K_{pp}, K_{pt}, K_{pa}$, closed form) and from there to the pixels by one
# vector-Jacobian product through the kernel (`ntklib.kernels.Kernel.vjp`). The run
# checkpoints every few iterations and resumes from the checkpoint if interrupted.
#
# **Runtime** at defaults: about 30 s on 2 CPU cores (`smoke=True`: ~10 s).
#
# **ntklib used:** `attack.greedy_init`, `attack.optimize_poisons`, `artifacts.save_poisons`,
# `pipeline.prepare`, `plotting.image_grid`, `plotting.savefig`.

# %%
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import matplotlib.pyplot as plt
import numpy as np

from ntklib import artifacts, attack, params, pipeline, plotting

# %% tags=["parameters"]
dataset = "digits"          # digits | cifar10 (CIFAR-10 from data/ or $NTKLIB_DATA_DIR)
source = 7                  # source class (label -1): its triggered images should be classified as target
target = 1                  # target class (label +1)
trigger = "periodic"        # periodic | patch
architecture = "mlp"        # mlp | cnn | wide_resnet, or their plain-JAX twins plain_mlp | plain_cnn | ...
width = 512                 # hidden units (mlp), channels (cnn), 16 x the widening factor (wide_resnet)
# kernel: the poisons' kernel: empirical (the clean victim's, the paper's) | empirical_init | infinite
kernel = "infinite"
budget = 2                  # number of poisons to optimize
opt_method = "lbfgsb"       # lbfgsb | adam
opt_steps = 100             # iterations of the poison optimization
poison_lr = 0.01            # the poisons' Adam step (unused by L-BFGS-B)
checkpoint_every = 25       # iterations between checkpoints
task_kw = {}                # sizes passed to ntklib.data.make_task (n_train_per_class, n_pool, ...)
seed = 0                    # the task's split
smoke = False               # True: tiny sizes (the smoke values of ntklib.params), seconds per notebook
fig_dir = "figures"         # outputs go to <fig_dir>/<notebook>/ (relative: to the repository root)

# %%
NB = "04_poison_optimization"
globals().update(params.resolve(NB, globals()))  # every parameter checked; smoke sizes if smoke
plotting.set_theme()
exp = pipeline.prepare(dataset, source, target, trigger, architecture, width, kernel=kernel, seed=seed,
                       task_kw=task_kw, smoke=smoke)
task, problem = exp.task, exp.problem
print(task.summary())

# %%
g = attack.greedy_init(problem, task.X_cand, budget, progress=False)
X0 = task.X_cand[g.indices]
out_dir = plotting.figure_dir(NB, fig_dir)
ckpt = out_dir / "checkpoint.npz"   # rerun with resume=True to continue an interrupted run
opt = attack.optimize_poisons(problem, X0, method=opt_method, steps=opt_steps, lr=poison_lr, checkpoint=ckpt,
                              checkpoint_every=checkpoint_every, resume=False)
print(f"greedy start: loss {opt.start.loss:.3f}, kernel ASR {opt.start.asr:.2f}, CA {opt.start.clean_acc:.2f}")
print(f"after {opt.steps} {opt_method} steps: loss {opt.final.loss:.3f}, kernel ASR {opt.final.asr:.2f}, "
      f"CA {opt.final.clean_acc:.2f}; pixels in [{opt.X_p.min():.2f}, {opt.X_p.max():.2f}]")

# %% [markdown]
# ## Loss and kernel-model ASR over the iterations

# %%
h = opt.history
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
axes[0].plot(h["step"], h["loss"], color=plotting.PALETTE["ntba"])
axes[0].set(yscale="log", xlabel=f"{opt_method} iteration", ylabel=r"backdoor loss $\mathcal{L}$", title="loss")
axes[1].plot(h["step"], h["asr"], color=plotting.PALETTE["ntba"], label="ASR on a")
axes[1].plot(h["step"], h["clean_acc"], color="0.4", ls="--", label="clean accuracy on t")
axes[1].set(xlabel=f"{opt_method} iteration", ylabel="fraction", ylim=(-0.02, 1.02), title="kernel model")
axes[1].legend()
plotting.savefig(fig, "optimization_history", NB, fig_dir, data={k: np.asarray(v) for k, v in h.items()});

# %% [markdown]
# ## The poisons before and after
#
# Top: the greedy poisons (triggered source images). Middle: after optimization.
# Bottom: the change (red brighter, blue darker). The optimizer may move pixels
# anywhere in $[0, 1]$; nothing constrains the poisons to look natural.

# %%
diff = opt.X_p - X0
lim = max(float(np.abs(diff).max()), 1e-6)
n = len(X0)
fig = plotting.image_grid(np.concatenate([X0, opt.X_p]), ncols=n,
                          titles=[f"greedy {i}" for i in range(n)] + [f"optimized {i}" for i in range(n)])
plotting.savefig(fig, "poisons_before_after", NB, fig_dir)
fig = plotting.image_grid(diff, ncols=n, cmap="RdBu_r", vmin=-lim, vmax=lim,
                          titles=[f"change {i}" for i in range(n)])
plotting.savefig(fig, "poisons_difference", NB, fig_dir,
                 data=dict(max_abs_change=lim, mean_abs_change=float(np.abs(diff).mean())))
stem = artifacts.save_poisons(out_dir / "poisons", opt.X_p,
                              dict(exp.spec, budget=budget, opt_method=opt_method, opt_steps=opt_steps,
                                   greedy_indices=g.indices, kernel_asr=opt.final.asr),
                              indices=g.indices)
print(f"poisons saved: {stem.name}.npz, {stem.name}.json and {stem.name}.png in the notebook's figure folder")
