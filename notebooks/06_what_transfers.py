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
# # 06 · What transfers: which kernel designs poisons that backdoor a trained network?
#
# **What this shows.** NTBA designs poisons against a *kernel model*; the attacker's real
# target is a *network trained from scratch* on the poisoned data. Whether a poison that
# works on the kernel model also works on the network depends on how well the kernel
# describes that training. This notebook designs poisons with three kernels of the same
# victim architecture, in the style of the paper's kernel-vs-network table:
#
# | kernel | what it is |
# |---|---|
# | `infinite` | the analytic infinite-width NTK (neural-tangents) |
# | `empirical_init` | the empirical NTK $\langle \nabla_\theta f(x), \nabla_\theta f(x')\rangle$ at a random init. |
# | `empirical` | the empirical NTK of the victim **trained on the clean data** (the paper's choice, App. C.4) |
# | `empirical_ensemble` | *ours, not the paper's:* the loss averaged over `ensemble_size` clean nets' NTKs |
#
# and, for each, puts the kernel-model ASR (on the attack set a) beside the ASR of fresh
# networks trained on d + poisons (on triggered source-class *test* images), with the
# sampling baseline in the same run. It then varies the *victim's* training (length and
# final loss, width, learning rate) with the poisons fixed, to see which knobs matter.
#
# Every victim is trained until its mean training loss is below `target_loss` **and**
# every training point, poisons included, has residual $|f(x) - y|$ below
# `target_residual` (or until `train_steps` run out); the largest poison residual is
# reported, so an unfitted poison is visible.
#
# **Runtime** at defaults: about 3 minutes alone on 2 CPU cores after notebook 05, whose clean victim,
# poisons and victims it reuses from the cache (`smoke=True`: about a minute). The victim variants
# are trained at the budgets around the 90% line (`variant_budgets`, `variant_sampling_budgets`);
# more budgets draw more of each variant's curve at about a minute per budget.
#
# **ntklib used:** `pipeline.compare_kernels` (`pipeline.run` per kernel, `evaluate.sweep`),
# `pipeline.KernelComparison`, `pipeline.victim_variants`, `pipeline.victim_config`,
# `evaluate.ratio_curve`, `evaluate.efficiency_ratio`, `plotting.kernel_vs_network`,
# `plotting.asr_vs_budget`, `plotting.ratio_curves`, `plotting.savefig`, `plotting.save_results`.

# %%
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ntklib import evaluate, params, pipeline, plotting

# %% tags=["parameters"]
dataset = "digits"          # digits | cifar10 (CIFAR-10 from data/ or $NTKLIB_DATA_DIR)
source = 7                  # source class (label -1): its triggered images should be classified as target
target = 1                  # target class (label +1)
trigger = "periodic"        # periodic | patch
trigger_amplitude = None    # None: the dataset's default (digits 0.15, CIFAR-10 6/255)
architecture = "mlp"        # mlp | cnn | wide_resnet, or their plain-JAX twins plain_mlp | plain_cnn | ...
width = 256                 # hidden units (mlp), channels (cnn), 16 x the widening factor (wide_resnet)
depth = 2                   # hidden layers (mlp), conv layers (cnn), depth (wide_resnet: 10, 16, ...)
readout = None              # cnn: flatten (None, the default) | pool (translation-invariant, as the paper's WRN)
# kernels: the kernels that design poisons; also empirical_ensemble (our extension)
kernels = ["infinite", "empirical_init", "empirical"]
ensemble_size = 3           # clean networks (other seeds) whose empirical NTKs empirical_ensemble averages
budgets = [1, 2, 3, 5, 10]  # NTBA budgets
sampling_budgets = [1, 2, 3, 5, 10, 20, 40]  # the baseline's budgets (it needs more to reach high ASR)
seeds = [0, 1, 2]           # one victim initialization (and one sampling subset) per seed
opt_steps = 30              # L-BFGS-B iterations of the poison optimization per budget (0: greedy only)
optimizer = "sgd"           # the victims' optimizer: sgd (momentum 0.9) | adam
batch_size = None           # the victims' minibatch (None: full batch)
train_steps = 4000          # the victims' training budget (stops early at target_loss)
victim_lr = 2.0             # the victims' learning rate
target_loss = 0.001         # victims stop once the training loss is below this
target_residual = 0.1       # ... and every point, poisons included, is fitted to within this (None: off)
victim_variants = [  # changes to the victims' training, the poisons fixed (those of kernel)
    {"label": "short training (300 steps)", "train_steps": 300, "target_residual": None},
    {"label": "long training (loss < 1e-5, residual < 0.02)", "train_steps": 10000, "target_loss": 1e-05,
     "target_residual": 0.02},
    {"label": "width 512", "width": 512},
    {"label": "lr 1.0 (10000 steps)", "victim_lr": 1.0, "train_steps": 10000},
]
# variant_budgets: NTBA budgets re-evaluated for each victim variant (among budgets; those around the asr_level line)
variant_budgets = [3, 5]
variant_sampling_budgets = [5, 10]  # the baseline's budgets for each victim variant
variant_seeds = [0, 1]      # the victim variants' seeds (among seeds; the default victim is read on the same)
ridge = 0.0                 # kernel regression's ridge (the paper's 0; raise it if the kernel is singular in float32)
kernel = "empirical"        # the kernel whose poisons the victim variants are trained on (one of kernels)
asr_level = 0.9             # the ASR level of the efficiency ratio
task_kw = {}                # sizes passed to ntklib.data.make_task (n_train_per_class, n_pool, ...)
seed = 0                    # the task's split
smoke = False               # True: tiny sizes (the smoke values of ntklib.params), seconds per notebook
fig_dir = "figures"         # outputs go to <fig_dir>/<notebook>/ (relative: to the repository root)

# %%
NB = "06_what_transfers"
globals().update(params.resolve(NB, globals()))  # every parameter checked; smoke sizes if smoke
plotting.set_theme()
out_dir = plotting.figure_dir(NB, fig_dir)
cfg = pipeline.victim_config(dataset, optimizer=optimizer, lr=victim_lr, steps=train_steps, target_loss=target_loss,
                             target_residual=target_residual, batch_size=batch_size)

# %% [markdown]
# ## Design poisons with each kernel, train victims on them
#
# Same task, same victim architecture and training, same budgets and seeds; only the
# kernel used to design the poisons changes. The sampling baseline is trained once.

# %%
comparison = pipeline.compare_kernels(kernels, kernel, sampling_budgets, budgets=budgets, seeds=seeds,
                                      dataset=dataset, source=source, target=target, trigger=trigger,
                                      architecture=architecture, width=width, depth=depth, opt_steps=opt_steps,
                                      train_config=cfg, trigger_amplitude=trigger_amplitude, seed=seed, task_kw=task_kw,
                                      smoke=smoke, asr_level=asr_level, ensemble_size=ensemble_size, readout=readout,
                                      ridge=ridge)
task, summary = comparison.runs[kernel].experiment.task, comparison.summary
print(task.summary())
comparison.table.to_csv(out_dir / "kernel_comparison.csv", index=False)
print(summary.round(3).to_string(index=False))

# %% [markdown]
# ## Kernel-model ASR against trained-network ASR
#
# A point on the diagonal is a kernel that predicts the network. Below it, the poisons
# fool the kernel model but not the network.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
plotting.kernel_vs_network(axes[0], summary, kernels)
axes[0].set_title("NTBA poisons: kernel vs network (labels: poisons)")
plotting.asr_vs_budget(axes[1], summary, "kernel", asr_level=asr_level)
axes[1].set_title(f"{architecture}-{width} victims, {len(seeds)} seeds")
for ax in axes:
    ax.legend(loc="lower right", fontsize=8)
plotting.savefig(fig, "kernel_vs_network_asr", NB, fig_dir, data=summary);

# %% [markdown]
# ## Poison efficiency against the ASR level
#
# The efficiency ratio (smallest sampling budget reaching a level of network ASR) /
# (smallest NTBA budget reaching it), for every level. Filled markers: both reach the
# level; open markers: sampling never does within its budgets, so the ratio is a lower bound.

# %%
levels = np.round(np.arange(0.3, 0.96, 0.05), 2)
curves = {k: evaluate.ratio_curve(comparison.with_baseline(k), levels) for k in kernels}
fig, ax = plt.subplots(figsize=(6.5, 4))
plotting.ratio_curves(ax, curves, level=asr_level)
ax.set_title("How many times fewer poisons NTBA needs")
ax.legend()
plotting.savefig(fig, "efficiency_ratio_curve", NB, fig_dir,
                 data=pd.DataFrame([dict(kernel=k, **r) for k, rs in curves.items() for r in rs]))
ratios = comparison.ratios(asr_level)
print(pd.DataFrame(ratios).T[["ntba_budget", "sampling_budget", "ratio", "lower_bound"]].to_string())

# %% [markdown]
# ## What the victim's training does to transfer
#
# The poisons stay those designed with the `kernel`; the victims change. Each
# variant trains NTBA victims and sampling victims with the same seeds (`variant_seeds`: by
# default fewer than the comparison's, to keep the notebook short); the default victim's row is
# read from the comparison on those seeds.

# %%
per_budget, variant_ratios = pipeline.victim_variants(comparison, kernel, victim_variants, variant_budgets,
                                                     variant_sampling_budgets, architecture, depth, readout,
                                                     asr_level, seeds=variant_seeds)
print(variant_ratios.to_string(index=False))

# %%
fig, ax = plt.subplots(figsize=(7, 4))
plotting.asr_vs_budget(ax, per_budget, "variant", asr_level=asr_level, label_sampling=False)
ax.set_title(f"victim variants (solid: NTBA, {kernel} kernel; dashed: sampling)")
ax.legend(fontsize=7, loc="lower right")
plotting.savefig(fig, "victim_variants", NB, fig_dir, data=per_budget);

# %%
results = dict(
    config=dict(dataset=dataset, source=source, target=target, trigger=task.trigger.spec, architecture=architecture,
                width=width, depth=depth, readout=readout, kernels=kernels, ensemble_size=ensemble_size,
                budgets=budgets, sampling_budgets=sampling_budgets, seeds=seeds, opt_steps=opt_steps, ridge=ridge,
                victim=cfg.__dict__, task=task.spec, smoke=smoke),
    kernel_comparison={k: dict(ratio=ratios[k], spec=comparison.runs[k].experiment.spec) for k in kernels},
    per_kernel_method_budget={f"{r.kernel}/{r.method}/{r.budget}": {c: r[c] for c in summary.columns
                                                                    if c not in ("kernel", "method", "budget")}
                              for _, r in summary.iterrows()},
    victim_variants=variant_ratios.to_dict("records"), victim_variants_per_budget=per_budget.to_dict("records"),
)
plotting.save_results(results, NB, fig_dir);

# %% [markdown]
# ## The numbers the next section reads
#
# Per kernel, from the NTBA rows of this run (each a mean over seeds, then the extreme over
# budgets): the largest gap between kernel-model and network ASR, the network ASR of the
# smallest budget, the largest poison residual, the lowest clean accuracy and the most
# training steps; then, per victim variant, the efficiency ratio and NTBA's network ASR at
# each budget.

# %%
print(comparison.evidence().round(3).to_string())
print(per_budget[per_budget.method == "ntba"].pivot(index="variant", columns="budget", values="net_asr")
      .join(variant_ratios.set_index("variant").ratio).round(3).to_string())

# %% [markdown]
# ## Why transfer succeeds or fails
#
# *(The prose describes the default run, digits 7 -> 1, periodic trigger of amplitude 0.15,
# MLP-256 victims, 3 seeds, and quotes no number: read them in the two tables above and in
# `results.json`. Other settings are in the results table of docs/results.md.)*
#
# **The empirical kernels predict the network.** With the empirical NTK, at
# initialization or after clean training, kernel-model ASR and network ASR stay close at
# every budget (the first column: points near the diagonal of the first figure), the
# victims fit every point, poisons included, to within `target_residual` well inside the
# training budget, and clean accuracy stays within a point of the clean victim's. The kernel
# of the *trained* network (the paper's choice) and the one at initialization reach 90%
# network ASR at the same budget.
#
# **The infinite-width kernel buys ASR with clean accuracy.** Its poisons move further
# from the data (the pixel changes are larger) and the finite network cannot fit them in
# the training budget (its victims run all `train_steps` and leave a poison residual far
# above `target_residual`): its poisons reach high ASR, but at the lowest clean accuracy of
# the three, more than the one-point drop a stealthy attack may cost. The kernel model
# cannot see this because it interpolates every poison exactly.
#
# **Fitting the poisons is the knob that matters.** Stopping the victims early (300 steps,
# poisons left far from their labels) lowers NTBA's ASR at every budget, while the sampling
# baseline, whose poisons are ordinary triggered images, still reaches 90% with 10: NTBA's
# advantage exists only for victims trained to fit their data, as the paper assumes. The
# other knobs (a 100x lower loss, twice the width, half the learning rate) move NTBA's
# ASR by a few points and the ratio only where a budget sits near the 90% line.
#
# **Why the ratio stays near 2 here, not 10.** The baseline is strong on this task:
# random triggered 7s relabelled as 1 reach 90% ASR with 10 poisons, so a ratio of 10
# would need 90% from a single poison, far above what the best single poison reaches on
# trained networks (the second column). The evidence points at the size of the problem:
# with 210 clean images, each random poison is already about half a percent of the training
# set.
#
# *(Earlier versions of this notebook evaluated the victims with jitted forward passes that
# the pinned XLA:CPU computed wrongly (see docs/results.md); the loss "plateau near 1e-3" and
# the unfitted single poison reported then were artifacts of that evaluation; the headline
# ratios did not change.)*
