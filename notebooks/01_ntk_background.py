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
# # 01 · The neural tangent kernel
#
# **What this shows.** The NTK is the inner product of the network's parameter
# gradients, $k(x, x') = \langle \nabla_\theta f(x;\theta), \nabla_\theta f(x';\theta)\rangle$.
# We check three facts the whole attack rests on:
#
# 1. the *empirical* NTK of a finite network at initialization approaches the
#    *analytic* infinite-width NTK as the width grows (error ~ 1/sqrt(width));
# 2. a wide network trained with squared loss ends where kernel regression with its
#    NTK ends (the "lazy" regime) — and a narrow one does not;
# 3. the kernel's eigen-spectrum decays fast: a few directions dominate what the
#    network learns first.
#
# **Runtime** at defaults: about 40 s on 2 CPU cores (`smoke=True`: ~15 s).
#
# **ntklib used:** `models.mlp`, `kernels.infinite_ntk`, `kernels.empirical_ntk`,
# `train.train`, `regression.fit`, `data.make_task`, `plotting.savefig`.

# %%
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ntklib import data, kernels, params, pipeline, plotting, regression, train

# %% tags=["parameters"]
dataset = "digits"          # digits | cifar10 (CIFAR-10 from data/ or $NTKLIB_DATA_DIR)
source = 7                  # source class (label -1): its triggered images should be classified as target
target = 1                  # target class (label +1)
architecture = "mlp"        # mlp | cnn (flatten readout)
widths = [64, 256, 1024, 2048]  # widths of the convergence study
n_points = 16               # images in the convergence study
lazy_widths = [32, 1024]    # narrow vs wide network of the training comparison
n_train_per_class = 40      # training images per class of the training comparison
n_test_per_class = None     # test images per class of the training comparison (None: all)
train_steps = 1500          # SGD steps of the training comparison (stops early at loss 1e-5)
seed = 0                    # the task's split
smoke = False               # True: tiny sizes (the smoke values of ntklib.params), seconds per notebook
fig_dir = "figures"         # outputs go to <fig_dir>/<notebook>/ (relative: to the repository root)

# %%
NB = "01_ntk_background"
globals().update(params.resolve(NB, globals()))  # every parameter checked; smoke sizes if smoke
plotting.set_theme()
task = data.make_task(dataset, source, target, n_train_per_class=n_train_per_class,
                      n_eval_per_class=5, n_test_per_class=n_test_per_class, seed=seed)
X = task.X_d[np.random.default_rng(seed).permutation(len(task.X_d))[:n_points]]
print(task.summary())

# %% [markdown]
# ## 1. Empirical NTK → analytic NTK as width grows
#
# In the NTK parameterization each layer computes $\frac{\sigma_W}{\sqrt{n_\text{in}}} W h + \sigma_b b$
# with $W, b \sim \mathcal N(0, 1)$. At initialization the empirical kernel is random; its
# fluctuations shrink like $1/\sqrt{\text{width}}$ and it converges to a deterministic
# kernel that `neural_tangents` computes in closed form. We measure the relative
# Frobenius error over three initializations per width.

# %%
rows = []
for w in widths:
    arch = pipeline.build_architecture(architecture, w)
    K_inf = kernels.infinite_ntk(arch)(X)
    for s in range(3):
        K_emp = kernels.empirical_ntk(arch.apply_fn, arch.init(s, X.shape))(X)
        rows.append(dict(width=w, init_seed=s,
                         rel_error=float(np.linalg.norm(K_emp - K_inf) / np.linalg.norm(K_inf))))
conv = pd.DataFrame(rows)
summary = conv.groupby("width").rel_error.agg(["mean", "std"]).reset_index()
print(summary.round(4).to_string(index=False))

fig, ax = plt.subplots(figsize=(5, 3.6))
ax.errorbar(summary.width, summary["mean"], yerr=summary["std"], marker="o", capsize=3, label="measured")
ref = summary["mean"].iloc[0] * np.sqrt(summary.width.iloc[0] / summary.width)
ax.plot(summary.width, ref, "k--", lw=1, label=r"$\propto 1/\sqrt{\mathrm{width}}$")
ax.set(xscale="log", yscale="log", xlabel="width (hidden units / channels)",
       ylabel=r"$\|K_\mathrm{emp} - K_\infty\|_F / \|K_\infty\|_F$",
       title=f"{architecture}: empirical vs analytic NTK")
ax.legend()
plotting.savefig(fig, "ntk_convergence", NB, fig_dir, data=conv);

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
for ax, K, title in [(axes[0], K_inf, "analytic (infinite width)"),
                     (axes[1], K_emp, f"empirical, width {widths[-1]}")]:
    im = ax.imshow(K, cmap="viridis")
    ax.set(title=title, xlabel="image j", ylabel="image i")
    fig.colorbar(im, ax=ax, shrink=0.8)
plotting.savefig(fig, "ntk_matrices", NB, fig_dir, data={"K_inf": K_inf, "K_emp_widest": K_emp});

# %% [markdown]
# ## 2. Training a network vs kernel regression with its NTK
#
# Gradient descent on the squared loss, linearized around $\theta_0$, converges to
#
# $$ f_\text{lin}(x) = f_0(x) + \Theta_0(x, X)\,\Theta_0(X, X)^{-1}\,(y - f_0(X)), $$
#
# kernel regression with the empirical NTK at initialization on the residual labels.
# `ntklib.regression.fit` does that solve (Cholesky in float64). A wide network stays
# close to its linearization (lazy training); a narrow one moves its kernel and parts ways.

# %%
rows, preds = [], {}
for w in lazy_widths:
    arch = pipeline.build_architecture(architecture, w)
    p0 = arch.init(seed, task.X_d.shape)
    f0_train, f0_test = train.predict(arch, p0, task.X_d), train.predict(arch, p0, task.X_test)
    ntk0 = kernels.empirical_ntk(arch.apply_fn, p0)
    reg = regression.fit(ntk0(task.X_d), task.y_d - f0_train)
    f_lin = f0_test + reg.predict(ntk0(task.X_test, task.X_d))
    cfg = train.TrainConfig(lr=3.0, momentum=0.9, steps=train_steps, target_loss=1e-5, seed=seed)
    res = train.train(arch, task.X_d, task.y_d, cfg, params=p0, progress=False)
    f_net = train.predict(arch, res.params, task.X_test)
    moved = train.param_distance(res.params, p0) / train.param_distance(p0, None)
    rmse = float(np.sqrt(np.mean((f_net - f_lin) ** 2)))
    rows.append(dict(width=w, train_loss=res.final_loss, rmse_net_vs_kernel=rmse,
                     corr=float(np.corrcoef(f_net, f_lin)[0, 1]), relative_param_change=moved))
    preds[w] = (f_lin, f_net)
lazy = pd.DataFrame(rows)
print(lazy.round(4).to_string(index=False))

fig, axes = plt.subplots(1, len(lazy_widths), figsize=(4 * len(lazy_widths), 3.8), squeeze=False)
for ax, w in zip(axes[0], lazy_widths, strict=True):
    f_lin, f_net = preds[w]
    ax.scatter(f_lin, f_net, s=12, c=np.where(task.y_test > 0, "C3", "C0"), alpha=0.7)
    lim = [min(f_lin.min(), f_net.min()) - 0.1, max(f_lin.max(), f_net.max()) + 0.1]
    ax.plot(lim, lim, "k--", lw=1)
    r = lazy[lazy.width == w].iloc[0]
    ax.set(xlabel="kernel regression with NTK at init", ylabel="trained network",
           title=f"width {w}: RMSE {r.rmse_net_vs_kernel:.3f}")
plotting.savefig(fig, "network_vs_kernel", NB, fig_dir,
                 data={"width": np.repeat(lazy_widths, len(task.y_test)),
                       "kernel_pred": np.concatenate([preds[w][0] for w in lazy_widths]),
                       "network_pred": np.concatenate([preds[w][1] for w in lazy_widths])});

# %% [markdown]
# ## 3. Eigen-spectrum of the NTK
#
# Kernel regression learns the top eigen-directions of the kernel first and the
# small ones slowly: the spectrum (below, on the clean training set d) tells how
# many "effective features" the model has. A backdoor must plant its trigger
# response in directions the clean data leave free.

# %%
arch = pipeline.build_architecture(architecture, lazy_widths[-1])
K_d = kernels.infinite_ntk(arch, dtype="float64")(task.X_d)
eig = np.sort(np.linalg.eigvalsh(K_d))[::-1]
fig, ax = plt.subplots(figsize=(5, 3.6))
ax.semilogy(np.arange(1, len(eig) + 1), np.maximum(eig, 1e-16), marker=".")
ax.set(xlabel="index (descending)", ylabel="eigenvalue", title=f"infinite NTK spectrum on d (n={len(eig)})")
plotting.savefig(fig, "ntk_spectrum", NB, fig_dir, data={"index": np.arange(1, len(eig) + 1), "eigenvalue": eig})
print(f"top eigenvalue {eig[0]:.3g}; share of the trace in the top 5: {eig[:5].sum() / eig.sum():.2f}")
