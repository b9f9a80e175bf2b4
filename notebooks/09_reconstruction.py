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
# # 09 · Reconstructing the training set from the weights, through the NTK
#
# **What this shows.** In the kernel regime, gradient descent on squared loss moves a network's
# parameters by a weighted sum of its training points' gradients,
# $\Delta\theta = \theta_f - \theta_0 = \sum_i a_i \nabla_\theta f(x_i; \theta_0)$ (exactly so for
# the linearized network). Loo, Hasani, Lechner, Amini and Rus (ICLR 2024) turn this around:
# search images $x_j$ and weights $\alpha_j$ whose weighted gradients add up to $\Delta\theta$,
#
# $$\min_{X, \alpha}\ \Big\lVert \Delta\theta - \sum_j \alpha_j \nabla_\theta f(x_j; \theta_f)\Big\rVert^2
#   + \text{range and total-variation penalties},$$
#
# with $2N$ candidates for $N$ training images, the ReLUs smoothed into softplus during the search.
# The candidates start as the authors' do: a flat image (the training set's scalar mean) plus
# $0.2\,\mathcal N(0, 1)$ noise per pixel, nothing of the private images' outline.
# This notebook measures how much of a training set leaks from a network's weights:
#
# 1. the attack at one setting, the reconstructions beside the training images (matched one to
#    one by L2), against the bar of real images the network never saw; and what the start is
#    worth (flat, mid-grey, or the private per-pixel mean image an attacker would not have);
# 2. how leakage depends on width and on the number of training images per parameter ($N/W$),
#    for the standard network and its linearization (the kernel regime, where the identity is
#    exact), with the gradient point separated from the network: gradients at the trained
#    weights, at the initial ones, or both (the authors' `both_kernels`);
# 3. reconstructions as a **distilled** training set (a kernel model trained on them alone),
#    with intervals over seeds;
# 4. a defender holding a poisoned victim's weights: do NTBA's poisons (and random triggered
#    images) stand out among the reconstructions?
#
# **Runtime** at defaults (digits 7 → 1, two-hidden-layer MLPs, N = 10 to 40, widths 64 to 512,
# four attack forms, five distillation seeds): under 2 minutes on 2 CPU cores, the independent
# attacks of each study two at a time (`ntklib.parallel`; `smoke=True`: ~1 minute). Width 1024
# (`-p "widths=[64, 256, 1024]"`) adds about 4 minutes; its numbers are in docs/results.md.
#
# **ntklib used:** `reconstruction.run`, `reconstruction.study`, `reconstruction.scaling_study`,
# `reconstruction.distillation_study`, `reconstruction.INIT`, `data.make_task`, `pipeline.prepare`,
# `defense_study.poison_sets`, `defense_study.poison_recovery`, `kernels.infinite_ntk`,
# `plotting.savefig`, `plotting.image_grid`, `plotting.save_results`.

# %%
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ntklib import data, defense_study, kernels, models, params, pipeline, plotting, reconstruction, train

# %% tags=["parameters"]
dataset = "digits"          # digits | cifar10 (CIFAR-10 from data/ or $NTKLIB_DATA_DIR)
source = 7                  # source class (label -1): its triggered images should be classified as target
target = 1                  # target class (label +1)
trigger = "periodic"        # the poisons' trigger (part 4): periodic | patch
depth = 2                   # hidden layers of the victims (plain-JAX ReLU MLPs, whose ReLUs the attack smooths)
width = 256                 # the main setting's width
n_train = 20                # the main setting's training images (half per class)
widths = [64, 256, 512]     # the width study (at n_train; 1024: docs/results.md)
n_trains = [10, 20, 40]     # the N study (at width)
attack_steps = 2000         # Adam steps of the reconstruction attack
attack_lr = 0.02            # its Adam step (the authors' 0.02)
init = "flat"               # its start: flat (the authors': scalar training mean + noise) | grey | mean_image
# distill_kernel: the distilled set's kernel: infinite (the architecture's NTK, no weights) | empirical (the victim's)
distill_kernel = "infinite"
distill_pair = [3, 8]       # part 3's classes (7 vs 1 is so easy that any labelled set scores 0.99)
distill_seeds = [0, 1, 2, 3, 4]  # part 3: one victim and attack per seed (intervals over them)
ntba_budget = 3             # part 4: poisons added to the n_train clean images
seeds = [0, 1, 2]           # part 4: one poisoned victim per seed (and one random subset per seed)
opt_steps = 30              # L-BFGS-B iterations of the poison optimization per budget (0: greedy only)
seed = 0                    # the task's split
smoke = False               # True: tiny sizes (the smoke values of ntklib.params), seconds per notebook
fig_dir = "figures"         # outputs go to <fig_dir>/<notebook>/ (relative: to the repository root)

# %%
NB = "09_reconstruction"
globals().update(params.resolve(NB, globals()))  # every parameter checked; smoke sizes if smoke
plotting.set_theme()


def sample(n, seed=seed, pair=(source, target)):
    """n training images (half per class) and labels, and the unseen real images of the same classes."""
    task = data.make_task(dataset, pair[0], pair[1], n_train_per_class=n // 2, n_eval_per_class=5, seed=seed)
    return task.X_d, task.y_d, task.X_test, task.y_test

# %% [markdown]
# ## 1. The attack at one setting
#
# A network of width `width` trained to near-zero loss on `n_train` images; $2N$ candidates
# start as noise around a flat image (`init`). The bar: $2N$ real images of the same classes that the
# network never saw, matched the same way, and for each training image the nearest of all unseen
# images: a training image counts as *leaked* when its reconstruction is closer to it than any
# unseen image is. (On 8 × 8 digits SSIM alone is a weak bar: unseen digits of the same classes
# already score about 0.7.) The numbers over the reconstructions are SSIM.

# %%
X, y, X_unseen, y_unseen = sample(n_train)
main = reconstruction.run(X, y, width, depth, steps=attack_steps, lr=attack_lr, X_unseen=X_unseen, seed=seed, init=init)
print({k: round(v, 4) if isinstance(v, float) else v for k, v in main["row"].items()})
m, R = main["match"], main["result"].X
fig = plotting.image_grid(np.concatenate([X, R[m["rec_index"]]]), ncols=min(len(X), 20),
                          titles=[""] * len(X) + [f"{s:.2f}" for s in m["ssim"]],
                          suptitle=f"training images and their matched reconstructions (SSIM), width {width}, "
                                   f"N = {n_train}")
plotting.savefig(fig, "reconstructions", NB, fig_dir, data=pd.DataFrame(dict(rec_index=m["rec_index"], l2=m["l2"],
                                                                            ssim=m["ssim"], label=y)));

# %% [markdown]
# **What the start is worth.** The same attack from the three starts: the authors' flat image,
# mid-grey (no statistic of the data at all), and the per-pixel mean of the *private* training
# images, which hands the attacker the digits' outline (`start_ssim`: the candidates' matched SSIM
# before the first step).

# %%
starts = reconstruction.study(X, y, [dict(init=i) for i in reconstruction.INIT], X_unseen=X_unseen, width=width,
                              depth=depth, steps=attack_steps, lr=attack_lr, seed=seed)
print(starts[["init", "start_ssim", "ssim", "baseline_ssim", "beats_unseen", "l2", "match"]].round(3).to_string())

# %% [markdown]
# ## 2. Width, N / W, the kernel regime, and where the gradients are taken
#
# The standard network is attacked with gradients at its trained weights, the linearized one at
# its initial weights (its gradients never move). Comparing the two changes the network *and* the
# gradient point, so the standard network is also attacked at its initial weights and at both
# (the authors' `both_kernels`: two sets of weights alpha, one per point). Across widths (at
# N = `n_train`) and across training-set sizes (at width `width`).

# %%
variants = [dict(linear=False, grad_at="final"), dict(linear=False, grad_at="init"),
            dict(linear=False, grad_at="both"), dict(linear=True, grad_at="init")]
common = dict(depth=depth, steps=attack_steps, lr=attack_lr, seed=seed, init=init)
samples = {n: sample(n)[:3] for n in {n_train, *n_trains}}
study = reconstruction.scaling_study(samples, n_train, width, widths, n_trains, variants, **common)
print(study[["study", "width", "n", "attack", "train_loss", "match", "ssim", "baseline_ssim", "beats_unseen", "l2",
             "seconds"]].round(3).to_string())

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for k, (name, s_) in enumerate(study.groupby("attack", sort=False)):
    s_ = s_.sort_values("n_over_w")
    axes[0].plot(s_.n_over_w, s_.ssim, marker="osD^"[k % 4], ls="", label=name)
    axes[1].plot(s_.n_over_w, s_.beats_unseen, marker="osD^"[k % 4], ls="", label=name)
axes[0].axhline(float(study.baseline_ssim.mean()), color="gray", ls="--", lw=1, label="unseen real images")
for ax, t in zip(axes, ("mean matched SSIM", "fraction leaked (closer than every unseen image)"), strict=True):
    ax.set(xscale="log", xlabel="N / W (training images per hidden unit)", title=t)
    ticks = sorted(set(np.round(study.n_over_w, 3)))
    ax.minorticks_off()
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
axes[0].legend(fontsize=8)
fig.tight_layout()
plotting.savefig(fig, "ssim_vs_n_over_w", NB, fig_dir, data=study);

# %% [markdown]
# ## 3. Reconstructions as a distilled training set
#
# The attacker holds the weights, so it can label its reconstructions with the victim's own
# predictions. A kernel model trained on the $2N$ labelled reconstructions alone, against the
# same model trained on the $N$ real training images and on the $2N$ starting candidates
# (labelled by the victim the same way). With `kernel="infinite"` the kernel is the
# architecture's infinite-width NTK, which knows nothing of the victim's weights: what the model
# learns comes from the images and their labels only. A fresh victim and attack per seed on N
# images of `distill_pair` (7 vs 1 is so easy that any labelled set reaches 0.99); the bars are
# 95% t-intervals over the seeds, and a difference from the real images counts only where its
# paired interval excludes zero.

# %%
Xd, yd, Xd_unseen, yd_unseen = sample(n_train, pair=distill_pair)
# infinite: no weights; empirical: each seed's victim's own NTK (the attacker holds its weights)
k_d = kernels.infinite_ntk(models.mlp(width, depth), dtype="float64") if distill_kernel == "infinite" else "empirical"
distill_rows, distill = reconstruction.distillation_study(Xd, yd, Xd_unseen, yd_unseen, k_d, width, depth,
                                                          seeds=distill_seeds, steps=attack_steps, lr=attack_lr,
                                                          init=init)
distill = pd.DataFrame(distill).set_index("set")
distill["separated"] = (distill.diff_low > 0) | (distill.diff_high < 0)
print(distill.round(3).to_string())
fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(distill.index, distill["mean"], xerr=[distill["mean"] - distill.low, distill.high - distill["mean"]],
        color=["gray", "C0", "C3", "C7"], capsize=3)
ax.set(xlim=(0.5, 1.0), xlabel=f"test accuracy ({int(distill.n_test.iloc[0])} images, {len(distill_seeds)} seeds)",
       title=f"kernel model ({distill_kernel} NTK) trained on each set, digits {distill_pair[0]} vs {distill_pair[1]}")
fig.tight_layout()
plotting.savefig(fig, "distillation", NB, fig_dir, data=pd.DataFrame(distill_rows));

# %% [markdown]
# ## 4. Poisons in the weights
#
# A defender holds a victim (one per seed) trained on N clean images plus `ntba_budget` poisons (NTBA's,
# designed with the empirical NTK of a clean victim of the same architecture, or random
# triggered images) and reconstructs. Do the poisons come back better than the clean images?

# %%
cfg = train.TrainConfig(optimizer="sgd", lr=0.5, momentum=0.9, steps=3000, target_loss=1e-5)
exp = pipeline.prepare(dataset, source, target, trigger, "plain_mlp", width, depth, "empirical", seed=seed,
                       train_config=cfg, task_kw=dict(n_train_per_class=n_train // 2, n_eval_per_class=10),
                       progress=False)
sets = defense_study.poison_sets(exp, ntba_budget, [ntba_budget], seeds=seeds, opt_steps=opt_steps)
poisons, examples = defense_study.poison_recovery(exp, sets, steps=attack_steps, lr=attack_lr, init=init)
print(poisons.round(3).to_string())
print(poisons.groupby("setting")[["ssim_poisons", "ssim_clean", "poisons_in_top", "mean_rank_poisons"]].mean().round(3))
fig = plotting.image_grid(np.concatenate([im for P, R, _ in examples.values() for im in (P, R)]), ncols=ntba_budget,
                          titles=[t for name, (P, _, sp) in examples.items()
                                  for t in [name] * len(P) + [f"SSIM {v:.2f}" for v in sp]],
                          suptitle=f"poisons (seed {seeds[0]}) and their matched reconstructions")
plotting.savefig(fig, "poisons", NB, fig_dir, data=poisons);

# %%
results = dict(dataset=dataset, main=main["row"], starts=starts.to_dict("records"), study=study.to_dict("records"),
               distilled=distill.reset_index().to_dict("records"), poisons=poisons.to_dict("records"))
plotting.save_results(results, NB, fig_dir);

# %% [markdown]
# ## What the numbers say
#
# *(The prose describes the default run, digits 7 → 1 (part 3: 3 vs 8), two-hidden-layer ReLU
# MLPs trained to a loss below 1e-5, 2N candidates from the authors' flat start, and quotes no
# number: read them in the tables printed above and in `results.json`; the dated measurements and
# `bench/reconstruction.py`'s comparison of the attack's forms are in the reconstruction section of
# docs/results.md.)*
#
# - **The bar matters.** Matched one to one, random *unseen* digits of the same classes already
#   reach a high SSIM against the training images (`baseline_ssim`), so an SSIM threshold alone
#   "recovers" most of them without any attack. The sharper count is `beats_unseen`, the fraction
#   of training images whose reconstruction is closer than every unseen digit of the test split.
# - **The start.** Started around the private per-pixel mean image, the candidates score far
#   higher before the first step (`start_ssim`) than from the flat image: that is the outline an
#   attacker holding only the weights does not have. After the attack the three starts end close
#   together (differences of a few images of N): the mean image flattered the starting point more
#   than the result.
# - **Where the gradients are taken explains much of "standard vs linearized".** Compare the four
#   attack forms at each width: attacked at its trained weights the standard network leaks least;
#   attacked at its initial weights, or at both points (the authors' `both_kernels`), it comes
#   close to its linearization from width 256 on, so much of the gap between "standard @ final"
#   and "linearized @ init" is the gradient point; the narrowest network, furthest from the kernel
#   regime, is where the network itself makes the largest difference. Every form leaks more at
#   width 256 than at 64, and at the initial weights (standard or linearized) more images per
#   parameter (larger N / W) leak less; at the trained weights the N sweep stays flat. One seed and
#   N = 20: a step of 0.05 in the leaked fraction is one image, so read trends across the table,
#   not single cells (width 1024, in docs/results.md, is the next point of the width sweep).
# - **Distillation.** The reconstructions, labelled by the victim, train a kernel model (the
#   infinite NTK, which knows nothing of the weights) nearly as well as the real training images,
#   and their noisy starting images do worse on average and vary far more from seed to seed; the
#   `separated` column says which of these differences the paired intervals over seeds establish
#   (with five seeds and a small test set, typically none).
# - **Poisons come back better than clean images** for both attacks (`ssim_poisons` against
#   `ssim_clean`, and their mean rank against chance, (n + 1) / 2). In kernel terms: a poison is a
#   triggered source image labelled as the target, so the network must move far to fit it, its
#   weight $a_i$ in $\Delta\theta$ is large, and the gradient sum is dominated by it. Optimizing the
#   poisons for the kernel does not make them stand out more than random triggered images: a
#   defender holding the weights sees both kinds, and neither reliably (`poisons_in_top`).
