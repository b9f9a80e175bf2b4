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
# # 05 · Transfer: do kernel-designed poisons backdoor trained networks?
#
# **What this shows.** The headline experiment of NTBA: for each number of poisons,
# design the poisons (greedy selection + L-BFGS-B, notebooks 03-04), then **train fresh
# networks from scratch** on the clean data plus the poisons and measure what users of
# the network would see: clean accuracy on the test split, and attack success rate =
# fraction of triggered source-class *test* images classified as target. The sampling
# attack (random triggered source images labelled target) runs beside it, with the same
# budgets and seeds, in the same run.
#
# By default the kernel is the paper's: the *empirical* NTK of the victim architecture
# trained on the clean data (App. C.4). Each trained victim reports its training loss and
# the largest residual $|f(x_p) - 1|$ on the poisons, so a poison the network failed to
# fit is visible.
#
# The paper reports 90% ASR with ten times fewer poisons than sampling on CIFAR-10. Here we
# print and save the same **poison-efficiency ratio**: (smallest sampling budget reaching
# 90% ASR) / (smallest NTBA budget reaching it), on trained networks.
#
# **Runtime** at defaults: about 80 s on 2 CPU cores (`smoke=True`: ~30 s).
#
# The defaults agree with notebook 06's paper-kernel run (same victim settings, budgets,
# seeds and optimization steps), so the two share their clean victim, kernel, poisons and
# trained victims through ntklib's cache (`build/cache/`, removed by `make clean`).
#
# **ntklib used:** `pipeline.prepare`, `pipeline.design_poisons`, `evaluate.sweep`,
# `evaluate.summarize`, `evaluate.efficiency_ratio`, `artifacts.save_poisons`, `plotting.savefig`.

# %%
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import matplotlib.pyplot as plt

from ntklib import artifacts, evaluate, params, pipeline, plotting

# %% tags=["parameters"]
dataset = "digits"          # digits | cifar10 (CIFAR-10 from data/ or $NTKLIB_DATA_DIR)
source = 7                  # source class (label -1): its triggered images should be classified as target
target = 1                  # target class (label +1)
trigger = "periodic"        # periodic | patch
architecture = "mlp"        # the victim, and the network whose NTK designs the poisons
width = 256                 # hidden units (mlp), channels (cnn), 16 x the widening factor (wide_resnet)
# kernel: the poisons' kernel: empirical (the clean victim's, the paper's) | empirical_init | infinite
kernel = "empirical"
budgets = [1, 2, 3, 5, 10]  # NTBA budgets
seeds = [0, 1, 2]           # one victim initialization (and one sampling subset) per seed
opt_method = "lbfgsb"       # lbfgsb | adam
opt_steps = 30              # L-BFGS-B iterations of the poison optimization per budget (0: greedy only)
train_steps = 4000          # the victims' training budget (stops early at target_loss)
victim_lr = 2.0             # the victims' learning rate
target_loss = 0.001         # victims stop once the training loss is below this
target_residual = 0.1       # ... and every point, poisons included, is fitted to within this (None: off)
batch_size = None           # the victims' minibatch (None: full batch)
asr_level = 0.9             # the ASR level of the efficiency ratio
task_kw = {}                # sizes passed to ntklib.data.make_task (n_train_per_class, n_pool, ...)
seed = 0                    # the task's split
smoke = False               # True: tiny sizes (the smoke values of ntklib.params), seconds per notebook
fig_dir = "figures"         # outputs go to <fig_dir>/<notebook>/ (relative: to the repository root)

# %%
NB = "05_transfer_to_networks"
globals().update(params.resolve(NB, globals()))  # every parameter checked; smoke sizes if smoke
plotting.set_theme()
cfg = pipeline.victim_config(dataset, lr=victim_lr, steps=train_steps, target_loss=target_loss,
                             target_residual=target_residual, batch_size=batch_size)
exp = pipeline.prepare(dataset, source, target, trigger, architecture, width, kernel=kernel, seed=seed,
                       train_config=cfg, task_kw=task_kw, smoke=smoke)
task = exp.task
budgets = [b for b in budgets if b <= len(task.X_cand)]
print(task.summary())
print("kernel:", exp.kernel, "| clean victim training loss:", exp.spec["clean_train_loss"])

# %% [markdown]
# ## Design the NTBA poisons (once per budget)

# %%
ntba = pipeline.design_poisons(exp, budgets, opt_steps=opt_steps, opt_method=opt_method)
out_dir = plotting.figure_dir(NB, fig_dir)
for b, entry in ntba.items():
    artifacts.save_poisons(out_dir / "poisons" / f"ntba_b{b}", entry["X_p"],
                           dict(exp.spec, budget=b, opt_method=opt_method, opt_steps=opt_steps),
                           indices=entry["indices"], grid=(b == max(budgets)))

# %% [markdown]
# ## Train victims on d + poisons: NTBA and sampling, same budgets, same seeds

# %%
df = evaluate.sweep(task, exp.problem, exp.arch, budgets=budgets, seeds=seeds, train_config=cfg, ntba=ntba,
                    csv_path=out_dir / "sweep.csv")
summary = evaluate.summarize(df)
cols = ["method", "budget", "kernel_asr_mean", "net_asr_mean", "net_asr_std", "net_ca_mean", "train_loss_mean",
        "max_poison_residual_mean"]
print(summary[cols].round(3).to_string(index=False))

# %% [markdown]
# ## The headline figure

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
panels = [("kernel_asr", "ASR, kernel model (on a)"), ("net_asr", "ASR, trained network (test)"),
          ("net_ca", "clean accuracy, trained network (test)")]
for ax, (col, title) in zip(axes, panels, strict=True):
    for meth in ["ntba", "sampling"]:
        d = summary[summary.method == meth]
        ax.errorbar(d.budget, d[f"{col}_mean"], yerr=d[f"{col}_std"], marker="o", capsize=3,
                    color=plotting.PALETTE[meth], label="NTBA" if meth == "ntba" else "sampling")
    if "asr" in col:
        ax.axhline(asr_level, color="k", lw=0.8, ls=":")
    ylim = (-0.02, 1.02) if "asr" in col else (min(0.9, float(summary[f"{col}_mean"].min()) - 0.02), 1.005)
    ax.set(xscale="log", xlabel="number of poisons", ylabel="fraction", title=title, ylim=ylim)
    ax.legend(loc="lower right")
fig.suptitle(f"{dataset} {source}->{target}, {trigger} trigger, {architecture}-{width}, kernel: {kernel}, "
             f"{len(seeds)} seeds", y=1.02)
plotting.savefig(fig, "headline_asr_vs_budget", NB, fig_dir, data=summary);

# %% [markdown]
# ## Poison efficiency at 90% ASR

# %%
ratio_net = evaluate.efficiency_ratio(df, "net_asr", asr_level)
ratio_kernel = evaluate.efficiency_ratio(df, "kernel_asr", asr_level)
for name, r in [("trained network", ratio_net), ("kernel model", ratio_kernel)]:
    if r["ratio"] is None:
        print(f"{name}: NTBA did not reach {asr_level:.0%} ASR within budgets {budgets}")
    else:
        bound = ">= " if r["lower_bound"] else ""
        print(f"{name}: NTBA reaches {asr_level:.0%} ASR with {r['ntba_budget']} poisons, sampling with "
              f"{r['sampling_budget'] or f'more than {max(budgets)}'}: efficiency ratio {bound}{r['ratio']:.1f}")
results = dict(
    config=dict(exp.spec, budgets=budgets, seeds=seeds, opt_method=opt_method, opt_steps=opt_steps),
    efficiency_ratio=dict(network=ratio_net, kernel=ratio_kernel),
    per_method_budget={f"{r.method}/{r.budget}": {k: r[k] for k in summary.columns if k not in ("method", "budget")}
                       for _, r in summary.iterrows()},
)
plotting.save_results(results, NB, fig_dir);
