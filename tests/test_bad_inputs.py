"""Bad inputs and faults, as a new user makes them: each gets the right exception and a
message that names what was wrong (and, where it helps, what to do), before any expensive
work. One table per module; the runner's refusals at the end."""
import json
import tarfile
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from ntklib import (
    adversarial,
    artifacts,
    attack,
    data,
    defense_study,
    defenses,
    evaluate,
    kernels,
    models,
    params,
    pipeline,
    poison_optimization,
    reconstruction,
    regression,
    runner,
    train,
    triggers,
    unlearning,
    validation,
)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    task = data.make_task("digits", source=7, target=1, n_train_per_class=12, n_eval_per_class=5,
                          n_test_per_class=5, seed=0)
    k = kernels.rbf(2.0, dtype="float64")
    problem = attack.BackdoorProblem.from_task(task, k)
    arch = models.plain_mlp(8)
    params = arch.init(0, task.X_d.shape[1:])
    X, y = task.X_d, task.y_d
    nan = X.copy()
    nan[0, 0, 0, 0] = np.nan
    (tmp / "garbage.npz").write_bytes(b"this is not a zip file")
    np.savez(tmp / "nan_poisons.npz", X_p=np.full((2, 8, 8, 1), np.nan), indices=np.array([0, 1]))
    (tmp / "nan_poisons.json").write_text(json.dumps({"params": {}, "n_poisons": 2, "image_shape": [8, 8, 1]}))
    np.savez(tmp / "lonely.npz", X_p=task.X_cand[:2], indices=np.array([0, 1]))
    np.savez(tmp / "badjson.npz", X_p=task.X_cand[:2], indices=np.array([0, 1]))
    (tmp / "badjson.json").write_text("{not json")
    np.savez(tmp / "mismatch.npz", X_p=task.X_cand[:3], indices=np.array([0, 1, 2]))
    (tmp / "mismatch.json").write_text(json.dumps({"params": {}, "n_poisons": 2, "image_shape": [8, 8, 1]}))
    # the newer modules: a kernel matrix, representations, a moved network, a predictor, a study's inputs
    K = np.asarray(k(X), np.float64)
    params1 = jax.tree_util.tree_map(lambda a: a + 0.01, params)
    flat = lambda a, b: -(a.reshape(len(a), -1) @ b.reshape(len(b), -1).T)  # noqa: E731
    exp = SimpleNamespace(task=task, arch=arch, train_config=train.TrainConfig(steps=5))
    sets = [dict(attack="ntba", budget=2, seed=0, X_p=task.X_cand[:2])]
    return dict(task=task, k=k, problem=problem, arch=arch, params=params, X=X, y=y, nan=nan, tmp=tmp,
                X_p=task.X_cand[:2], df=_table(), K=K, R=X.reshape(len(X), -1)[:, :20] + 0.0,
                other=models.plain_mlp(4).init(0, (8, 8, 1)), params0=params, params1=params1,
                neg_kernel=kernels.user_kernel(flat), features=adversarial.eigen_features(k, X, y),
                predictor=adversarial.kernel_predictor(k, X, y), exp=exp, sets=sets)


def _table():
    import pandas as pd

    return pd.DataFrame([dict(method=m, budget=b, seed=0, net_asr=a)
                         for m, b, a in [("ntba", 1, 0.5), ("ntba", 2, 0.95), ("sampling", 2, 0.3)]])


def _nan(a):
    a = np.array(a, dtype=float)
    a.flat[0] = np.nan
    return a


# (id, call(env), exception type, phrase of the message)
CASES = [
    # ------------------------------------------------------------------ data
    ("task-unknown-dataset", lambda e: data.make_task("mnist"), ValueError, "dataset='mnist' is invalid"),
    ("task-same-classes", lambda e: data.make_task(source=7, target=7), ValueError, "must differ"),
    ("task-class-out-of-range", lambda e: data.make_task(source=12), ValueError, "classes are the integers 0-9"),
    ("task-negative-seed", lambda e: data.make_task(seed=-1), ValueError, "seed=-1 is invalid: must be >= 0"),
    ("task-zero-size", lambda e: data.make_task(n_train_per_class=0), ValueError,
     "n_train_per_class=0 is invalid: must be >= 1"),
    ("task-fractional-size", lambda e: data.make_task(n_train_per_class=2.5), TypeError, "must be an integer"),
    ("task-too-large", lambda e: data.make_task(n_train_per_class=10_000), ValueError, "images are available"),
    ("task-pool-too-large", lambda e: data.make_task(n_pool=10_000), ValueError, "choose n_pool between"),
    ("task-no-eval-size", lambda e: data.make_task(n_eval_per_class=None), ValueError, "n_eval_per_class=None"),
    ("task-trigger-object", lambda e: data.make_task(trigger=42), TypeError, "trigger must be a name"),
    ("task-missing-data-dir", lambda e: data.make_task(data_dir="/no/such/folder"), FileNotFoundError,
     "data_dir='/no/such/folder': no such file"),
    ("dataset-unknown", lambda e: data.load_dataset("cifar100"), ValueError, "name='cifar100' is invalid"),
    ("dataset-no-classes", lambda e: data.load_dataset("digits", classes=[]), ValueError, "classes=[] is invalid"),
    ("trigger-amplitude-on-patch", lambda e: data.default_trigger("digits", "patch", amplitude=0.1), ValueError,
     "only the periodic trigger has an amplitude"),
    ("trigger-amplitude-too-large", lambda e: data.default_trigger("digits", amplitude=5), ValueError,
     "amplitude=5 is invalid: must be > 0 and <= 1"),
    ("cifar-not-found", lambda e: data.find_cifar10(e["tmp"]), FileNotFoundError, "CIFAR-10 not found"),
    # ------------------------------------------------------------------ triggers
    ("periodic-amplitude-5", lambda e: triggers.make_trigger("periodic", amplitude=5.0), ValueError,
     "amplitude=5.0 is invalid: must be > 0 and <= 1"),
    ("periodic-typo", lambda e: triggers.make_trigger("periodic", amplitud=0.1), ValueError,
     "did you mean 'amplitude'"),
    ("periodic-zero-periods", lambda e: triggers.make_trigger("periodic", periods=0), ValueError,
     "periods=0 is invalid: must be > 0"),
    ("periodic-orientation", lambda e: triggers.periodic(e["X"], orientation="diagonal"), ValueError,
     "orientation='diagonal' is invalid"),
    ("patch-size-zero", lambda e: triggers.make_trigger("patch", size=0), ValueError, "size=0 is invalid"),
    ("patch-location-one-number", lambda e: triggers.make_trigger("patch", location=(1,)), ValueError,
     "a (row, col) pair"),
    ("patch-too-big", lambda e: triggers.patch(e["X"], size=9), ValueError, "patch size must be in [1, 8]"),
    ("trigger-unknown", lambda e: triggers.make_trigger("sparkle"), ValueError, "name='sparkle' is invalid"),
    ("pattern-no-mask", lambda e: triggers.make_trigger("pattern", pattern=np.ones((8, 8, 1))), ValueError,
     "needs both pattern= and mask="),
    ("pattern-out-of-box", lambda e: triggers.make_trigger("pattern", pattern=2 * np.ones((8, 8, 1)),
                                                           mask=np.ones((8, 8, 1))), ValueError,
     "pattern has values outside [0, 1]"),
    ("trigger-single-image", lambda e: triggers.periodic(e["X"][0]), ValueError, "add a batch axis with x[None]"),
    ("trigger-8bit-images", lambda e: triggers.periodic(e["X"] * 255), ValueError, "divide 8-bit images by 255"),
    ("trigger-nan-images", lambda e: triggers.periodic(e["nan"]), ValueError, "1 NaN or infinite pixels"),
    ("trigger-not-callable", lambda e: triggers.custom("sparkle"), TypeError, "a trigger wraps a function"),
    ("trigger-changes-shape", lambda e: triggers.custom(lambda b: b[:, :4])(e["X"]), ValueError,
     "a trigger must keep the image shape"),
    ("trigger-8bit-output", lambda e: triggers.custom(lambda b: b * 255)(e["X"]), ValueError,
     "8-bit scale? images and triggers here are in [0, 1]"),
    ("trigger-shifted-out-of-the-box", lambda e: triggers.custom(lambda b: b - 2)(e["X"]), ValueError,
     "these would clip 100% of the pixels"),
    # ------------------------------------------------------------------ models
    ("mlp-width-zero", lambda e: models.mlp(width=0), ValueError, "width=0 is invalid: must be >= 1"),
    ("mlp-width-float", lambda e: models.plain_mlp(width=2.5), TypeError, "width=2.5 is invalid: must be an integer"),
    ("mlp-activation", lambda e: models.plain_mlp(activation="tanh"), ValueError, "activation='tanh' is invalid"),
    ("mlp-negative-b-std", lambda e: models.plain_mlp(b_std=-1), ValueError, "b_std=-1 is invalid"),
    ("cnn-readout", lambda e: models.cnn(readout="max"), ValueError, "readout='max' is invalid"),
    ("wrn-depth", lambda e: models.wide_resnet(depth=12), ValueError, "6 n + 4"),
    ("wrn-widening-zero", lambda e: models.wide_resnet(k=0), ValueError, "k=0 is invalid"),
    ("build-typo", lambda e: models.build({"name": "mlp", "widht": 8}), ValueError, "did you mean 'width'"),
    ("build-number", lambda e: models.build(42), TypeError, "must be an architecture name or a dict"),
    ("init-negative-seed", lambda e: e["arch"].init(-1, (8, 8, 1)), ValueError, "seed=-1 is invalid"),
    ("init-shape-int", lambda e: e["arch"].init(0, 8), TypeError, "must be a shape tuple"),
    # ------------------------------------------------------------------ train
    ("config-negative-lr", lambda e: train.TrainConfig(lr=-0.1), ValueError, "TrainConfig.lr=-0.1 is invalid"),
    ("config-zero-steps", lambda e: train.TrainConfig(steps=0), ValueError, "TrainConfig.steps=0 is invalid"),
    ("config-optimizer", lambda e: train.TrainConfig(optimizer="lbfgs"), ValueError,
     "TrainConfig.optimizer='lbfgs' is invalid"),
    ("config-momentum", lambda e: train.TrainConfig(momentum=1.5), ValueError, "TrainConfig.momentum=1.5"),
    ("config-batch-zero", lambda e: train.TrainConfig(batch_size=0), ValueError, "TrainConfig.batch_size=0"),
    ("config-dtype", lambda e: train.TrainConfig(dtype="float16"), ValueError, "TrainConfig.dtype='float16'"),
    ("config-residual-zero", lambda e: train.TrainConfig(target_residual=0), ValueError,
     "None switches it off"),
    ("config-steps-string", lambda e: train.TrainConfig(steps="100"), TypeError, "must be an integer"),
    ("train-label-count", lambda e: train.train(e["arch"], e["X"], e["y"][:-1], progress=False), ValueError,
     "labels for 24 images"),
    ("train-nan-images", lambda e: train.train(e["arch"], e["nan"], e["y"], progress=False), ValueError,
     "NaN or infinite entries"),
    ("train-01-labels", lambda e: train.train(e["arch"], e["X"], (e["y"] > 0).astype(int), progress=False),
     ValueError, "map 0/1 labels with y = 2 * y - 1"),
    ("train-empty", lambda e: train.train(e["arch"], e["X"][:0], e["y"][:0], progress=False), ValueError, "is empty"),
    ("train-config-dict", lambda e: train.train(e["arch"], e["X"], e["y"], {"lr": 1.0}, progress=False), TypeError,
     "use TrainConfig(**that_dict)"),
    ("train-arch-name", lambda e: train.train("mlp", e["X"], e["y"], progress=False), TypeError,
     "must be an ntklib.models.Architecture"),
    ("train-params-other-shape", lambda e: train.train(e["arch"], e["X"][:, :4], e["y"], params=e["params"],
                                                       progress=False), ValueError, "do not fit these parameters"),
    ("train-many-one-pair", lambda e: train.train_many(e["arch"], (e["X"], e["y"]), progress=False), TypeError,
     "wrap it as [(X, y)]"),
    ("train-many-workers", lambda e: train.train_many(e["arch"], [(e["X"], e["y"])], workers=0, progress=False),
     ValueError, "workers=0 is invalid"),
    ("predict-other-shape", lambda e: train.predict(e["arch"], e["params"], e["X"][:, :4]), ValueError,
     "do not fit these parameters"),
    ("predict-other-network", lambda e: train.predict(e["arch"], models.plain_mlp(4).init(0, (8, 8, 1)), e["X"]),
     ValueError, "these are another network's parameters"),
    ("train-many-other-network", lambda e: train.train_many(e["arch"], [(e["X"], e["y"])], progress=False,
                                                            params=[models.plain_mlp(4).init(0, (8, 8, 1))]),
     ValueError, "these are another network's parameters"),
    ("save-params-suffix", lambda e: train.save_params(e["tmp"] / "net.pkl", e["arch"], e["params"]), ValueError,
     "must end in .npz"),
    ("predict-batch-zero", lambda e: train.predict(e["arch"], e["params"], e["X"], batch=0), ValueError,
     "batch=0 is invalid"),
    ("predict-nan-params", lambda e: train.predict(e["arch"], [(_nan(w), b) for w, b in e["params"]], e["X"]),
     ValueError, "a diverged network cannot be used"),
    ("load-params-garbage", lambda e: train.load_params(e["tmp"] / "garbage.npz", (8, 8, 1)), ValueError,
     "garbage.npz: cannot read this file as network parameters"),
    ("load-params-missing", lambda e: train.load_params(e["tmp"] / "none.npz", (8, 8, 1)), FileNotFoundError,
     "none.npz"),
    # ------------------------------------------------------------------ kernels
    ("kernel-negative-tile", lambda e: kernels.rbf(tile=-3), ValueError, "tile[0]=-3 is invalid: must be >= 1"),
    ("kernel-dtype", lambda e: kernels.rbf(dtype="float16"), ValueError, "dtype='float16' is invalid"),
    ("kernel-lengthscale", lambda e: kernels.rbf(0.0), ValueError, "lengthscale=0.0 is invalid"),
    ("kernel-empty-batch", lambda e: e["k"](e["X"][:0]), ValueError, "x1=an array of shape (0, 8, 8, 1)"),
    ("kernel-shapes-differ", lambda e: e["k"](e["X"], e["X"][:, :4]), ValueError, "same image shape"),
    ("kernel-nan", lambda e: e["k"](e["nan"]), ValueError, "NaN or infinite entries"),
    ("kernel-vjp-cotangent", lambda e: e["k"].vjp(e["X"][:3], e["X"], np.ones((3, 2))), ValueError,
     "must have shape (3, 24)"),
    ("kernel-no-infinite", lambda e: kernels.infinite_ntk(models.plain_mlp()), ValueError, "no infinite-width kernel"),
    ("kernel-kind", lambda e: kernels.make_kernel("magic"), ValueError, "kind='magic' is invalid"),
    ("kernel-empirical-no-params", lambda e: kernels.make_kernel("empirical", e["arch"]), ValueError,
     "needs network parameters"),
    ("kernel-empirical-params-for-other-images",
     lambda e: kernels.empirical_ntk(e["arch"].apply_fn, e["arch"].init(0, (4, 4, 1)))(e["X"][:3]), ValueError,
     "x1 holds inputs of shape (8, 8, 1), but the network's parameters do not take them"),
    ("kernel-apply-not-callable", lambda e: kernels.empirical_ntk("mlp", e["params"]), TypeError,
     "pass arch.apply_fn"),
    ("kernel-pair-wrong-shape", lambda e: kernels.user_kernel(lambda a, b: a.reshape(len(a), -1))(e["X"]),
     ValueError, "it must return the (n1, n2) matrix"),
    ("kernel-memory-zero", lambda e: kernels.user_kernel(lambda a, b: a @ b.T, memory=0), ValueError,
     "memory=0 is invalid"),
    # ------------------------------------------------------------------ regression
    ("fit-not-square", lambda e: regression.fit(np.ones((3, 4)), np.ones(3)), ValueError, "square (n, n)"),
    ("fit-negative-ridge", lambda e: regression.fit(np.eye(3), np.ones(3), ridge=-1), ValueError, "ridge=-1"),
    ("fit-nan", lambda e: regression.fit(_nan(np.eye(3)), np.ones(3)), regression.NotPositiveDefiniteError,
     "NaN or infinite entries"),
    ("fit-indefinite", lambda e: regression.fit(-np.eye(3), np.ones(3)), regression.NotPositiveDefiniteError,
     "Increase the ridge"),
    ("fit-label-count", lambda e: regression.fit(np.eye(3), np.ones(2)), ValueError, "square (n, n) matrix and n"),
    # ------------------------------------------------------------------ attack
    ("problem-kernel-string", lambda e: attack.BackdoorProblem.from_task(e["task"], "ntk"), TypeError,
     "ntklib.kernels.user_kernel"),
    ("problem-zero-labels", lambda e: attack.BackdoorProblem(e["k"], e["X"], 0 * e["y"], e["task"].X_t,
                                                             e["task"].y_t, e["task"].X_a), ValueError,
     "labels must be in [-1.0, 1.0]"),
    ("problem-empty-t", lambda e: attack.BackdoorProblem(e["k"], e["X"], e["y"], e["X"][:0], e["y"][:0],
                                                         e["task"].X_a), ValueError, "evaluation set t is empty"),
    ("problem-no-weights", lambda e: attack.BackdoorProblem.from_task(e["task"], e["k"], w_clean=0, w_attack=0),
     ValueError, "both 0"),
    ("problem-attack-shape", lambda e: attack.BackdoorProblem(e["k"], e["X"], e["y"], e["task"].X_t, e["task"].y_t,
                                                              e["task"].X_a[:, :4]), ValueError,
     "expected (8, 8, 1)"),
    ("greedy-empty-pool", lambda e: attack.greedy_init(e["problem"], e["task"].X_cand[:0], 1, progress=False),
     ValueError, "empty pool"),
    ("greedy-budget-over-pool", lambda e: attack.greedy_init(e["problem"], e["task"].X_cand, 1000, progress=False),
     ValueError, "budget=1000 is invalid: must be >= 1 and <= 12"),
    ("greedy-budget-zero", lambda e: attack.greedy_init(e["problem"], e["task"].X_cand, 0, progress=False),
     ValueError, "budget=0 is invalid"),
    ("optimize-method", lambda e: attack.optimize_poisons(e["problem"], e["X_p"], method="sgd"), ValueError,
     "method='sgd' is invalid"),
    ("optimize-adam-negative-lr", lambda e: attack.optimize_poisons(e["problem"], e["X_p"], "adam", lr=-1),
     ValueError, "lr=-1 is invalid: must be > 0"),
    ("optimize-lbfgs-memory-zero", lambda e: attack.optimize_poisons(e["problem"], e["X_p"], memory=0), ValueError,
     "memory=0 is invalid"),
    ("optimize-negative-steps", lambda e: attack.optimize_poisons(e["problem"], e["X_p"], steps=-1), ValueError,
     "steps=-1 is invalid"),
    ("optimize-nan-poisons", lambda e: attack.optimize_poisons(e["problem"], _nan(e["X_p"])), ValueError,
     "NaN or infinite pixels"),
    ("optimize-no-poisons", lambda e: attack.optimize_poisons(e["problem"], e["X_p"][:0]), ValueError,
     "X_p0 is empty"),
    ("optimize-damaged-checkpoint", lambda e: attack.optimize_poisons(e["problem"], e["X_p"], steps=1,
                                                                       checkpoint=e["tmp"] / "garbage.npz",
                                                                       progress=False),
     attack.CheckpointReadError, "pass resume=False to start afresh"),
    ("optimize-checkpoint-suffix", lambda e: attack.optimize_poisons(e["problem"], e["X_p"], checkpoint="c.txt"),
     ValueError, "must end in .npz"),
    ("optimize-resume-string", lambda e: attack.optimize_poisons(e["problem"], e["X_p"], resume="no"), TypeError,
     "resume='no' is invalid: must be True or False"),
    ("sampling-over-pool", lambda e: attack.sampling_baseline(5, 6), ValueError, "budget=6 is invalid"),
    ("loss-out-of-box", lambda e: e["problem"].loss(2 * e["X_p"]), ValueError, "pixels outside [0, 1]"),
    ("score-method", lambda e: attack.score_candidates(e["problem"], e["task"].X_cand, method="magic"), ValueError,
     "method='magic' is invalid"),
    # ------------------------------------------------------------------ evaluate
    ("transfer-poison-shape", lambda e: evaluate.transfer(e["task"], e["arch"], e["X_p"][:, :4]), ValueError,
     "expected (8, 8, 1)"),
    ("transfer-poison-box", lambda e: evaluate.transfer(e["task"], e["arch"], 3 * e["X_p"]), ValueError,
     "pixels outside [0, 1]"),
    ("transfer-poison-nan", lambda e: evaluate.transfer(e["task"], e["arch"], _nan(e["X_p"])), ValueError,
     "NaN or infinite pixels"),
    ("transfer-no-seeds", lambda e: evaluate.transfer(e["task"], e["arch"], e["X_p"], seeds=[]), ValueError,
     "seeds=[] is invalid: is empty"),
    ("transfer-task-dict", lambda e: evaluate.transfer({"X_d": 1}, e["arch"], e["X_p"]), TypeError,
     "must be an ntklib.data.BackdoorTask"),
    ("ntba-budget-over-pool", lambda e: evaluate.ntba_poisons(e["problem"], e["task"].X_cand, [1, 1000]), ValueError,
     "budgets[1]=1000 is invalid"),
    # one budget policy: run and sweep refuse what the design steps refuse (they used to drop it silently)
    ("sweep-sampling-budget-over-pool", lambda e: evaluate.sweep(e["task"], e["problem"], e["arch"], budgets=[1],
                                                                 sampling_budgets=[1000], network=False),
     ValueError, "sampling_budgets[0]=1000 is invalid"),
    ("sweep-method", lambda e: evaluate.sweep(e["task"], e["problem"], e["arch"], methods=("magic",)), ValueError,
     "methods[0]='magic' is invalid"),
    ("sweep-csv-suffix", lambda e: evaluate.sweep(e["task"], e["problem"], e["arch"], csv_path=e["tmp"] / "t.xlsx"),
     ValueError, "must end in .csv"),
    ("summarize-wrong-table", lambda e: evaluate.summarize(e["df"].drop(columns="budget")), ValueError,
     "pass the DataFrame of sweep()"),
    ("ratio-level", lambda e: evaluate.efficiency_ratio(e["df"], level=1.5), ValueError, "level=1.5 is invalid"),
    ("ratio-metric", lambda e: evaluate.efficiency_ratio(e["df"], metric="nope"), ValueError,
     "no column(s) ['nope']"),
    # ------------------------------------------------------------------ artifacts
    ("save-nan-poisons", lambda e: artifacts.save_poisons(e["tmp"] / "p", _nan(e["X_p"]), {}), ValueError,
     "NaN or infinite pixels"),
    ("save-params-not-dict", lambda e: artifacts.save_poisons(e["tmp"] / "p", e["X_p"], "budget 2"), TypeError,
     "must be a dict of the parameters"),
    ("load-poisons-missing", lambda e: artifacts.load_poisons(e["tmp"] / "nothing"), FileNotFoundError,
     "no poisons at"),
    ("load-poisons-garbage", lambda e: artifacts.load_poisons(e["tmp"] / "garbage"), ValueError,
     "garbage.npz: cannot read this file as poisons"),
    ("load-poisons-nan", lambda e: artifacts.load_poisons(e["tmp"] / "nan_poisons"), ValueError,
     "are not valid images"),
    ("load-poisons-no-json", lambda e: artifacts.load_poisons(e["tmp"] / "lonely"), FileNotFoundError,
     "has no provenance file"),
    ("load-poisons-bad-json", lambda e: artifacts.load_poisons(e["tmp"] / "badjson"), ValueError,
     "badjson.json: cannot read this file as the provenance"),
    ("load-poisons-mismatch", lambda e: artifacts.load_poisons(e["tmp"] / "mismatch"), ValueError,
     "do not belong together"),
    ("savefig-not-a-figure", lambda e: __import__("ntklib").plotting.savefig("fig", "x", "nb", e["tmp"]), TypeError,
     "must be a matplotlib Figure"),
    # ------------------------------------------------------------------ pipeline
    ("params-kernel", lambda e: pipeline.check_params(kernel="magic"), ValueError, "kernel='magic' is invalid"),
    ("params-zero-budget", lambda e: pipeline.check_params(budgets=[1, 0]), ValueError, "budgets[1]=0 is invalid"),
    ("params-zero-lr", lambda e: pipeline.check_params(victim_lr=0), ValueError, "victim_lr=0 is invalid: must be > 0"),
    ("params-task-kw-typo", lambda e: pipeline.check_params(task_kw={"n_train": 3}), ValueError,
     "did you mean 'n_train_per_class'"),
    ("params-variant-typo", lambda e: pipeline.check_params(victim_variants=[{"label": "x", "victim_lrr": 1}]),
     ValueError, "did you mean 'victim_lr'"),
    ("params-smoke-string", lambda e: pipeline.check_params(smoke="yes"), TypeError, "must be True or False"),
    ("victim-config-dataset", lambda e: pipeline.victim_config("cifar100"), ValueError, "dataset='cifar100'"),
    ("victim-config-typo", lambda e: pipeline.victim_config(step=10), ValueError, "did you mean 'steps'"),
    ("smoke-task-kw-string", lambda e: pipeline.smoke_task_kw("small"), TypeError, "task_kw='small' is invalid"),
    ("run-method", lambda e: pipeline.run(methods=("ntba", "random")), ValueError, "methods[1]='random'"),
    ("prepare-width-zero", lambda e: pipeline.prepare(width=0, smoke=True), ValueError, "width=0 is invalid"),
    ("prepare-kernel-dtype", lambda e: pipeline.prepare(kernel_dtype="half", smoke=True), ValueError,
     "kernel_dtype='half' is invalid"),
    ("design-not-experiment", lambda e: pipeline.design_poisons("exp", [1]), TypeError,
     "must be the Experiment of pipeline.prepare"),
    # ------------------------------------------------------------------ defenses
    ("defenses-datamodels-frac-1", lambda e: defenses.kernel_datamodels(e["K"], e["y"], frac=1.0), ValueError,
     "frac=1.0 is invalid: must be > 0 and < 1"),
    ("defenses-datamodels-frac-all", lambda e: defenses.kernel_datamodels(e["K"][:6, :6], e["y"][:6], frac=0.95),
     ValueError, "the subsets would hold all 6 of them"),
    ("defenses-spectral-not-symmetric", lambda e: defenses.kernel_spectral_scores(np.triu(e["K"])), ValueError,
     "is not symmetric"),
    ("defenses-spectral-negative", lambda e: defenses.kernel_spectral_scores(-e["K"]), ValueError,
     "is not positive semi-definite"),
    ("defenses-hat-cross-block", lambda e: defenses.hat_datamodels(e["K"][:, :5], e["y"]), ValueError,
     "must be a square kernel matrix"),
    ("defenses-representer-negative", lambda e: defenses.representer_scores(-e["K"], e["y"], e["K"][:3]),
     ValueError, "K_train=an array of shape (24, 24) and dtype float64 is invalid: is not positive semi-definite"),
    ("defenses-metrics-pm1-labels", lambda e: defenses.detection_metrics(np.arange(24.0), e["y"]), ValueError,
     "for labels in {-1, +1} pass labels == 1"),
    ("defenses-metrics-short-mask", lambda e: defenses.detection_metrics(np.arange(24.0), e["y"][:20] > 0),
     ValueError, "holds 20 flags for 24 scores"),
    ("defenses-spectre-limit1", lambda e: defenses.spectre(e["R"], 2, limit1=-1), ValueError,
     "limit1=-1 is invalid: must be > 0"),
    ("defenses-spectre-tau", lambda e: defenses.spectre(e["R"], 2, tau=2.0), ValueError, "tau=2.0 is invalid"),
    ("defenses-robust-cov-max-iter", lambda e: defenses.robust_covariance(e["R"], 0.1, 2, max_iter=0), ValueError,
     "max_iter=0 is invalid"),
    # ------------------------------------------------------------------ defense_study
    ("study-detect-short-labels", lambda e: defense_study.detect(e["arch"], e["params"], e["X"], e["y"][:-2], 2),
     ValueError, "holds 22 labels for 24 images"),
    ("study-detect-spectral-inf-without-kernel", lambda e: defense_study.detect(
        e["arch"], e["params"], e["X"], e["y"], 2, detectors=["spectral_inf"]), ValueError,
     "there is no infinite-width kernel"),
    ("study-detect-unknown", lambda e: defense_study.detect(e["arch"], e["params"], e["X"], e["y"], 2,
                                                            detectors=["spectrall"]), ValueError,
     "detectors[0]='spectrall' is invalid"),
    ("study-detect-none", lambda e: defense_study.detect(e["arch"], e["params"], e["X"], e["y"], 2, detectors=[]),
     ValueError, "name at least one of"),
    ("study-detect-other-network", lambda e: defense_study.detect(e["arch"], e["other"], e["X"], e["y"], 2),
     ValueError, "these are another network's parameters"),
    ("study-detect-representer-no-query", lambda e: defense_study.detect(e["arch"], e["params"], e["X"], e["y"], 2,
                                                                          detectors=["representer"]), ValueError,
     "needs X_query"),
    ("study-sets-one-dict", lambda e: defense_study.detection_study(e["exp"], e["sets"][0]), TypeError,
     "must be the non-empty list of poison_sets"),
    ("study-sets-missing-field", lambda e: defense_study.detection_study(e["exp"], [{"attack": "ntba"}]), ValueError,
     "sets[0] lacks ['budget', 'seed', 'X_p']"),
    ("study-sets-other-shape", lambda e: defense_study.detection_study(
        e["exp"], [dict(e["sets"][0], X_p=e["X_p"][:, :4])]), ValueError, "expected (8, 8, 1)"),
    ("study-ibau-few-victims", lambda e: defense_study.ibau_study(e["exp"], e["sets"], [], n_clean=[5]), ValueError,
     "but 0 victims"),
    # ------------------------------------------------------------------ unlearning
    ("ibau-outer-lr-diverges", lambda e: unlearning.ibau(e["arch"], e["params"], e["X"], e["y"], rounds=1,
                                                         inner_steps=2, outer_steps=20, outer_lr=1e4, batch_size=8,
                                                         progress=False),
     validation.DivergenceError, "lower outer_lr (now 10000)"),
    ("ibau-negative-radius", lambda e: unlearning.ibau(e["arch"], e["params"], e["X"], e["y"], radius=-1,
                                                       progress=False), ValueError, "radius=-1 is invalid"),
    ("ibau-radius-beyond-box", lambda e: unlearning.ibau(e["arch"], e["params"], e["X"], e["y"], radius=1e30,
                                                         progress=False), ValueError,
     "at most the image box's diagonal 8"),
    ("ibau-portion-negative", lambda e: unlearning.ibau(e["arch"], e["params"], e["X"], e["y"], portion=-0.1,
                                                        progress=False), ValueError, "portion=-0.1 is invalid"),
    ("ibau-inner-labels-typo", lambda e: unlearning.ibau(e["arch"], e["params"], e["X"], e["y"], inner_labels="own",
                                                         progress=False), ValueError, "inner_labels='own' is invalid"),
    ("ibau-fixed-point-batch-typo", lambda e: unlearning.ibau(e["arch"], e["params"], e["X"], e["y"],
                                                              fixed_point_batch="all", progress=False), ValueError,
     "fixed_point_batch='all' is invalid"),
    ("fixed-point-delta-shape", lambda e: unlearning.fixed_point_diagnostics(e["arch"], e["params"], e["X"], e["y"],
                                                                             np.zeros((4, 4, 1))), ValueError,
     "delta has shape (4, 4, 1)"),
    ("ibau-on-round-not-callable", lambda e: unlearning.ibau(e["arch"], e["params"], e["X"], e["y"], on_round=3,
                                                             progress=False), TypeError, "on_round=3 is invalid"),
    ("ibau-other-network", lambda e: unlearning.ibau(e["arch"], e["other"], e["X"], e["y"], progress=False),
     ValueError, "these are another network's parameters"),
    ("universal-negative-radius", lambda e: unlearning.universal_perturbation(e["arch"], e["params"], e["X"], e["y"],
                                                                              radius=-1.0), ValueError,
     "radius=-1.0 is invalid: must be > 0"),
    ("universal-labels-01", lambda e: unlearning.universal_perturbation(e["arch"], e["params"], e["X"],
                                                                        (e["y"] > 0).astype(int), 1.0), ValueError,
     "map 0/1 labels"),
    ("neumann-negative-terms", lambda e: unlearning.implicit_hypergradient(None, None, None, None, K=-1), ValueError,
     "K=-1 is invalid"),
    # ------------------------------------------------------------------ adversarial
    ("predictor-finite-t-not-psd", lambda e: adversarial.kernel_predictor(e["neg_kernel"], e["X"], e["y"], t=1.0),
     regression.NotPositiveDefiniteError, "beyond the jitter"),
    ("predictor-infinite-t-not-psd", lambda e: adversarial.kernel_predictor(e["neg_kernel"], e["X"], e["y"]),
     regression.NotPositiveDefiniteError, "so this is not a kernel matrix"),
    ("shares-unchanged-images", lambda e: adversarial.feature_attack_shares(e["features"], e["X"], e["y"], e["X"]),
     ValueError, "X_adv did not change the predictor's margins"),
    ("shares-other-count", lambda e: adversarial.feature_attack_shares(e["features"], e["X"], e["y"], e["X"][:3]),
     ValueError, "X_adv holds 3 images for the 24 of X"),
    ("robustness-negative-eps", lambda e: adversarial.robustness_curve(e["predictor"], e["X"], e["y"], [0, -0.1]),
     ValueError, "eps_list[1]=-0.1 is invalid"),
    ("robustness-not-a-predictor", lambda e: adversarial.robustness_curve(e["k"], e["X"], e["y"], [0.1]), TypeError,
     "must be a KernelPredictor"),
    ("attack-eps-over-box", lambda e: adversarial.fgsm(e["predictor"], e["X"], e["y"], 2.0), ValueError,
     "eps=2.0 is invalid: must be >= 0 and <= 1.0"),
    ("transfer-images-list", lambda e: adversarial.network_transfer(e["arch"], e["params"], e["y"], [e["X"]]),
     TypeError, "must be a dict {eps: images}"),
    ("transfer-other-network", lambda e: adversarial.network_transfer(e["arch"], e["other"], e["y"], {0.0: e["X"]}),
     ValueError, "these are another network's parameters"),
    ("kernel-change-from-zero", lambda e: adversarial.relative_kernel_change(e["K"], 0 * e["K"]), ValueError,
     "K_0 is all zeros"),
    ("trajectory-probe-shape", lambda e: adversarial.kernel_trajectory(e["arch"], e["X"], e["y"], None,
                                                                       e["X"][:, :4], e["y"]), ValueError,
     "expected (8, 8, 1)"),
    # ------------------------------------------------------------------ reconstruction
    ("reconstruct-shape-int", lambda e: reconstruction.reconstruct(e["arch"], e["params0"], e["params1"], 4, 8),
     TypeError, "must be the shape of one image, (height, width, channels)"),
    ("reconstruct-shape-2d", lambda e: reconstruction.reconstruct(e["arch"], e["params0"], e["params1"], 4, (8, 8)),
     ValueError, "got 2 numbers"),
    ("reconstruct-nan-start", lambda e: reconstruction.reconstruct(e["arch"], e["params0"], e["params1"], 4, (8, 8, 1),
                                                                   init_mean=_nan(np.zeros((8, 8, 1)))), ValueError,
     "init_mean=an array of shape (8, 8, 1) and dtype float64 is invalid: holds 1 NaN"),
    ("reconstruct-start-shape", lambda e: reconstruction.reconstruct(e["arch"], e["params0"], e["params1"], 4,
                                                                     (8, 8, 1), init_mean=np.zeros(5)), ValueError,
     "does not broadcast to the image shape"),
    ("reconstruct-lr-diverges", lambda e: reconstruction.reconstruct(e["arch"], e["params0"], e["params1"], 4,
                                                                     (8, 8, 1), steps=40, lr=1e6, log_every=10,
                                                                     progress=False),
     validation.DivergenceError, "lower lr (now 1e+06; the authors use 0.02)"),
    ("reconstruct-grad-at-typo", lambda e: reconstruction.reconstruct(
        e["arch"], e["params0"], e["params1"], 4, (8, 8, 1), grad_at="initial"), ValueError,
     "grad_at='initial' is invalid: must be one of ['final', 'init', 'both']"),
    ("reconstruction-run-init-typo", lambda e: reconstruction.run(e["X"], e["y"], 8, init="mean"), ValueError,
     "init='mean' is invalid"),
    ("distillation-one-seed", lambda e: reconstruction.distillation_study(e["X"], e["y"], e["X"], e["y"], e["k"],
                                                                          8, seeds=[0]), ValueError,
     "needs at least 2 of them"),
    ("reconstruct-init-other-width", lambda e: reconstruction.reconstruct(e["arch"], e["other"], e["params1"], 4,
                                                                          (8, 8, 1)), ValueError,
     "are not parameters of one network"),
    ("reconstruction-run-few-unseen", lambda e: reconstruction.run(e["X"], e["y"], 8, X_unseen=e["X"][:3]),
     ValueError, "X_unseen holds 3 images: the baseline draws 2N = 48"),
    ("reconstruction-quality-threshold", lambda e: reconstruction.quality(e["X"], e["X"], threshold=5), ValueError,
     "threshold=5 is invalid"),
    ("defenses-metrics-all-poisons", lambda e: defenses.detection_metrics(np.arange(24.0), np.ones(24, bool)),
     ValueError, "marks all of the 24 scored points as poisons"),
    ("neumann-not-callable", lambda e: unlearning.implicit_hypergradient(1, 2, e["params"], np.zeros(3)), TypeError,
     "outer=1 is invalid: must be a JAX function of (theta, delta)"),
    ("study-ibau-setting-typo", lambda e: defense_study.ibau_study(e["exp"], e["sets"], [e["params"]], n_clean=[5],
                                                                   outer_lrr=1e-3), ValueError,
     "did you mean 'outer_lr'"),
    ("study-exp-dict", lambda e: defense_study.poison_sets({"task": e["task"]}), TypeError,
     "must be the Experiment of pipeline.prepare(...) (it lacks task, problem)"),
    ("cache-kind-path", lambda e: __import__("ntklib").cache.save("../x", "k", {"a": np.zeros(1)}), ValueError,
     "kind is a plain name"),
    # ------------------------------------------------------------------ validators of the newer modules
    ("gram-cross-block", lambda e: validation.check_gram(np.ones((3, 4))), ValueError,
     "must be a square kernel matrix"),
    ("mask-float-values", lambda e: validation.check_mask([0.5, 1.0], "mask"), ValueError,
     "must be a boolean mask, got the values [0.5, 1.0]"),
    # ------------------------------------------------------------------ parameter files of notebooks 07-09
    ("params-distill-pair-class", lambda e: pipeline.check_params(distill_pair=[3, 12]), ValueError,
     "parameter distill_pair: "),
    ("params-distill-pair-same", lambda e: pipeline.check_params(distill_pair=[3, 3]), ValueError,
     "two different classes"),
    ("params-spectral-inf-plain", lambda e: params.check("07_defenses", {**params.defaults("07_defenses"),
                                                                       "architecture": "plain_mlp"}), ValueError,
     "needs an infinite-width kernel"),
    ("params-08-kernel", lambda e: params.check("08_adversarial_ntk", {**params.defaults("08_adversarial_ntk"),
                                                                     "predictor_kernel": "empirical"}), ValueError,
     "predictor_kernel='empirical' is invalid"),
    ("params-06-variant-budgets", lambda e: params.check("06_what_transfers", {**params.defaults("06_what_transfers"),
                                                                            "variant_budgets": [4]}), ValueError,
     "must be a subset of budgets"),
    ("params-06-variant-seeds", lambda e: params.check("06_what_transfers", {**params.defaults("06_what_transfers"),
                                                                          "variant_seeds": [0, 3]}), ValueError,
     "variant_seeds=[0, 3] must be a subset of seeds=[0, 1, 2]"),
    ("params-missing", lambda e: params.check("04_poison_optimization", {"seed": 0}), ValueError,
     "parameter(s) ['dataset', "),
    ("params-unknown", lambda e: params.check("04_poison_optimization", {**params.defaults("04_poison_optimization"),
                                                                         "lr": 0.1}), ValueError,
     "unknown parameter(s) ['lr']"),
    ("params-wrong-kind", lambda e: params.check("04_poison_optimization", {**params.defaults("04_poison_optimization"),
                                                                            "budget": "2"}), TypeError,
     "budget='2' is invalid: must be an integer"),
    ("params-no-schema", lambda e: params.defaults("10_nothing"), ValueError, "has no parameter schema"),
]


@pytest.mark.parametrize("call,exc,phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_clear_message(env, call, exc, phrase):
    with pytest.raises(exc) as info:
        call(env)
    assert phrase in str(info.value), f"message {str(info.value)!r} lacks {phrase!r}"


RUNNER_CASES = [
    ("unknown", ["--smoke", "-p", "nosuchparam=1", "04"], "unknown parameter 'nosuchparam'"),
    ("typo", ["--smoke", "-p", "bugdet=3", "04"], "did you mean budget"),
    ("other-notebook", ["--smoke", "-p", "widths=[16]", "04"], "it is a parameter of 01_ntk_background"),
    ("wrong-type", ["--smoke", "-p", "budget=two", "04"],
     "04_poison_optimization: parameter budget='two' is invalid: must be an integer"),
    ("float-for-int", ["--smoke", "-p", "opt_steps=2.5", "04"], "must be an integer"),
    ("out-of-range", ["--smoke", "-p", "poison_lr=-1", "04"], "poison_lr=-1 is invalid: must be > 0"),
    ("renamed", ["--smoke", "-p", "lr=0.5", "05"], "'lr' was renamed: victim_lr (05, 06, 07"),
    ("rule-between-parameters", ["-p", "budgets=[2]", "06"], "variant_budgets=[3, 5] must be a subset of budgets"),
    ("bad-choice", ["--smoke", "-p", "kernel=magic", "02"], "kernel='magic' is invalid"),
    ("no-equals", ["-p", "seed", "04"], "write -p NAME=VALUE"),
    ("params-file-missing", ["--params", "no/such.yaml", "04"], "no such file"),
    ("no-such-notebook", ["--smoke", "99"], "no notebook matches ['99']"),
    ("timings-not-json", ["--smoke", "--timings", "t.txt", "04"], "must end in .json"),
    ("out-is-a-file", ["--smoke", "04", "--out", __file__], "is a file"),
]


@pytest.mark.parametrize("argv,phrase", [c[1:] for c in RUNNER_CASES], ids=[c[0] for c in RUNNER_CASES])
def test_runner_refuses_bad_parameters_before_running(argv, phrase, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("a notebook ran: the case was not refused"))
    assert runner.main(["--out", str(tmp_path)] + argv) == 2
    assert phrase in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing may run before the parameters are checked"


def test_runner_params_file_must_be_a_mapping_of_known_names(tmp_path, capsys):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert runner.main(["--params", str(tmp_path / "list.yaml"), "04"]) == 2
    assert "must hold a mapping" in capsys.readouterr().err
    (tmp_path / "typo.yaml").write_text("sed: 1\n")
    assert runner.main(["--params", str(tmp_path / "typo.yaml"), "04"]) == 2
    assert "no notebook has it; did you mean seed" in capsys.readouterr().err


def test_runner_gives_each_notebook_its_own_parameters():
    """A --params file serves every notebook; -p names must belong to a selected one."""
    srcs = runner.notebook_sources(["01", "04"])
    plan = runner.check_parameters(srcs, {"seed": 3}, {"widths": [16], "budget": 1})
    assert plan["01_ntk_background"] == {"widths": [16], "seed": 3}
    assert plan["04_poison_optimization"] == {"budget": 1, "seed": 3}
    # None where the notebook documents it (switches the residual target off); refused where not
    src05 = runner.notebook_sources(["05"])
    assert runner.check_parameters(src05, {"target_residual": None})["05_transfer_to_networks"] == {
        "target_residual": None}
    with pytest.raises(runner.ParameterError, match="victim_lr=None is invalid: must be a number"):
        runner.check_parameters(src05, {"victim_lr": None})


def test_damaged_cifar_archive_is_named_and_leaves_nothing_behind(tmp_path):
    """A corrupted archive is blamed (not the folder), nothing is extracted, and a second
    attempt says the same (no half-extracted folder that looks complete)."""
    src = tmp_path / "src" / data.CIFAR10_FOLDER
    src.mkdir(parents=True)
    for name in data.CIFAR10_MD5:
        (src / name).write_bytes(b"not the real batch")
    archive = tmp_path / data.CIFAR10_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=data.CIFAR10_FOLDER)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"the CIFAR-10 archive .* is damaged.*Nothing was extracted"):
            data.find_cifar10(tmp_path)
        assert not (tmp_path / data.CIFAR10_FOLDER).exists()
        assert not (tmp_path / (data.CIFAR10_FOLDER + ".partial")).exists()


def test_damaged_checkpoint_is_left_in_place(env, tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    ckpt.write_bytes(b"\x00" * 100)
    with pytest.raises(attack.CheckpointReadError, match="It was left as it is"):
        attack.optimize_poisons(env["problem"], env["X_p"], steps=1, checkpoint=ckpt, progress=False)
    assert ckpt.read_bytes() == b"\x00" * 100
    r = attack.optimize_poisons(env["problem"], env["X_p"], steps=2, checkpoint=ckpt, resume=False, progress=False,
                                checkpoint_every=1)
    assert r.steps == 2 and ckpt.stat().st_size > 100  # resume=False restarts and overwrites it


def test_a_checkpoint_past_the_requested_steps_is_refused(env, tmp_path):
    """A 4-step checkpoint resumed with steps=2 cannot give the 2-step result (it holds only its last
    iterate): refused with what to do, the file kept; steps=4 takes it as it is, steps=5 goes on."""
    ckpt = tmp_path / "ckpt.npz"
    kw = dict(method="adam", lr=0.05, checkpoint=ckpt, progress=False, checkpoint_every=2)
    four = attack.optimize_poisons(env["problem"], env["X_p"], steps=4, **kw)
    saved = ckpt.read_bytes()
    with pytest.raises(attack.CheckpointMismatchError, match=r"is at step 4, past the steps=2 asked for.*steps>=4"):
        attack.optimize_poisons(env["problem"], env["X_p"], steps=2, **kw)
    assert ckpt.read_bytes() == saved
    again = attack.optimize_poisons(env["problem"], env["X_p"], steps=4, **kw)
    assert again.steps == 4 and np.array_equal(again.X_p, four.X_p)
    assert attack.optimize_poisons(env["problem"], env["X_p"], steps=5, **kw).steps == 5


def test_failed_lbfgs_is_not_reported_as_converged(env, monkeypatch):
    """scipy's status 2 (e.g. a failed line search) is a stop with scipy's message, never converged=True."""
    from scipy import optimize

    real = optimize.minimize

    def failing(*a, **kw):
        r = real(*a, **dict(kw, options=dict(kw["options"], maxiter=1)))
        r.status, r.message, r.success = 2, "ABNORMAL_TERMINATION_IN_LNSRCH", False
        return r

    monkeypatch.setattr(poison_optimization._sopt, "minimize", failing)
    with pytest.warns(UserWarning, match="ABNORMAL_TERMINATION_IN_LNSRCH"):
        r = attack.optimize_poisons(env["problem"], env["X_p"], steps=10, checkpoint_every=5, progress=False)
    assert not r.converged and "ABNORMAL" in r.message and r.steps == 1


def test_validation_happens_before_expensive_work(env, monkeypatch):
    """A bad budget is refused before the kernel is evaluated on the pool."""
    calls = []
    monkeypatch.setattr(env["problem"], "candidate_blocks", lambda X: calls.append(1))
    with pytest.raises(ValueError):
        attack.greedy_init(env["problem"], env["task"].X_cand, 1000, progress=False)
    assert not calls


def test_there_are_enough_cases():
    assert len(CASES) + len(RUNNER_CASES) >= 180
    modules = {c[0].split("-")[0] for c in CASES}
    assert len(modules) >= 30


@pytest.mark.parametrize("path", sorted(p for p in runner.ROOT.glob("params/*.yaml")
                                         if not p.name.startswith("paper_regime")), ids=lambda p: p.name)
def test_committed_parameter_files_pass_the_checks_of_the_notebooks_they_serve(path):
    """Each params/*.yaml passes the checks of every notebook it would reach: those its own command
    line names (every notebook when it names none), for the run and its smoke run, with the rules
    between each notebook's parameters (ntklib.params.NOTEBOOK_RULES): a file gone stale after a
    notebook changed fails here, not an hour into a run."""
    import re

    import yaml

    rel = re.escape(path.relative_to(runner.ROOT).as_posix())
    names = re.findall(r"ntklib\.runner ((?:\d\d\s+)+)--params " + rel, path.read_text())
    names += re.findall(r"make figures PARAMS=" + rel + r' NOTEBOOKS="([\d ]+)"', path.read_text())
    selection = sorted({n for group in names for n in group.split()})
    shared = yaml.safe_load(path.read_text())
    runner.check_parameters(runner.notebook_sources(selection), {}, shared)
    runner.check_parameters(runner.notebook_sources(selection), {"smoke": True}, shared)


def test_a_budget_above_the_tasks_pool_is_refused_by_the_runner_before_anything_runs(tmp_path, monkeypatch):
    """The library refuses a budget above the candidate pool (one policy); the runner refuses it first,
    from the task sizes alone (data.pool_size), for the run and for its smoke sizes."""
    from ntklib import data

    assert data.pool_size("digits", 7) == len(data.make_task("digits", 7, 1).X_cand)
    assert data.pool_size("digits", 7, n_train_per_class=30, n_eval_per_class=10) == 30
    assert data.pool_size("cifar10", "truck", n_pool=12, n_train_per_class=150) == 12
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("a notebook ran"))
    assert runner.main(["-p", "budgets=[1, 200]", "06"]) == 2
    assert runner.main(["-p", "task_kw={'n_train_per_class': 40}", "-p", "sampling_budgets=[5, 41]", "06"]) == 2
    assert runner.main(["-p", "ntba_budget=11", "-p", "n_train=20", "09"]) == 2
    with pytest.raises(ValueError, match=r"budgets=\[1, 5\] is invalid: \[5\] exceed\(s\) the candidate pool of 4"):
        params.check("05_transfer_to_networks", {**params.defaults("05_transfer_to_networks"), "budgets": [1, 5],
                                                 "task_kw": {"n_pool": 4}})


def test_every_notebook_parameters_cell_is_its_schema():
    """The parameters cell of each notebook is ntklib.params' rendering of its schema (the names, their
    order and defaults), and every schema's defaults and smoke values pass its checks (`make lint`,
    runner --check-pairs, reports a cell edited by hand)."""
    assert params.stale_cells(runner.NOTEBOOKS) == []
    assert sorted(params.SCHEMAS) == [p.stem for p in runner.notebook_sources()]
    for path in runner.notebook_sources():
        assert runner.notebook_parameters(path) == params.defaults(path.stem)
        values = params.check(path.stem, params.defaults(path.stem))
        params.check(path.stem, params.smoke_values(path.stem, values))


def test_a_hand_edited_parameters_cell_is_found_and_rewritten(tmp_path):
    src = runner.NOTEBOOKS / "04_poison_optimization.py"
    (tmp_path / src.name).write_text(src.read_text().replace("budget = 2 ", "budget = 3 "))
    assert params.stale_cells(tmp_path) == ["04_poison_optimization"]
    assert params.write_cells(tmp_path) == ["04_poison_optimization"]
    assert (tmp_path / src.name).read_text() == src.read_text() and params.stale_cells(tmp_path) == []


def test_resolve_checks_and_applies_the_smoke_values(capsys):
    """What a notebook's first cell does: its namespace's values checked, and with smoke=True the smoke
    values (printed), checked again; a namespace without the parameters cell is refused by name."""
    ns = {**params.defaults("06_what_transfers"), "smoke": True, "budgets": [1, 3, 5, 10], "other": 1}
    out = params.resolve("06_what_transfers", ns)
    assert set(out) == set(params.names("06_what_transfers"))
    assert out["budgets"] == [1, 3] and out["seeds"] == [0] and out["width"] == 128 and out["train_steps"] == 300
    assert out["victim_variants"] == params.defaults("06_what_transfers")["victim_variants"][:1]
    assert out["ridge"] == 0.0 and out["victim_lr"] == 2.0  # no smoke value: kept
    assert "smoke run: " in capsys.readouterr().out
    assert params.resolve("06_what_transfers", {**ns, "smoke": False})["budgets"] == [1, 3, 5, 10]
    with pytest.raises(NameError, match=r"parameter\(s\) \['dataset'"):
        params.resolve("06_what_transfers", {"smoke": True})
    with pytest.raises(ValueError, match="victim_lr=-1"):
        params.resolve("06_what_transfers", {**ns, "victim_lr": -1})


# ---------------------------------------------------------------------------- faults: the cache
def _digits_experiment():
    """An experiment that needs no training (the empirical NTK at initialization)."""
    return pipeline.prepare(architecture="plain_mlp", width=16, kernel="empirical_init", smoke=True, progress=False)


@pytest.mark.parametrize("value", ["disabled", "on", "yes", "TRUE", "1"])
def test_cache_switch_that_is_not_a_folder_is_refused(monkeypatch, value, tmp_path):
    from ntklib import cache

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NTKLIB_CACHE_DIR", value)
    with pytest.raises(ValueError, match=r"looks like a switch, not a folder.*\['0', 'off', 'none', 'false'\]"):
        cache.directory()
    assert not list(tmp_path.iterdir()), "no folder may be created for a switch"
    for off in ("off", "0", "none", "False", ""):
        monkeypatch.setenv("NTKLIB_CACHE_DIR", off)
        assert cache.directory() is None
    monkeypatch.setenv("NTKLIB_CACHE_DIR", "./disabled")  # a folder of that name, asked for as a path
    assert cache.directory().name == "disabled"


def test_a_cache_that_cannot_be_written_costs_no_result(monkeypatch, tmp_path):
    """A file where the cache folder should be (what a read-only folder is to a non-root user):
    the design runs, without checkpoints, with one warning, and gives what an uncached run gives."""
    exp = _digits_experiment()
    monkeypatch.setenv("NTKLIB_CACHE_DIR", "off")
    want = pipeline.design_poisons(exp, [1, 2], opt_steps=3, progress=False)
    (tmp_path / "blocker").write_text("a file, not a folder")
    monkeypatch.setenv("NTKLIB_CACHE_DIR", str(tmp_path / "blocker" / "cache"))
    with pytest.warns(UserWarning, match="results are not cached"):
        got = pipeline.design_poisons(exp, [1, 2], opt_steps=3, progress=False)
    for b in (1, 2):
        np.testing.assert_array_equal(got[b]["X_p"], want[b]["X_p"])


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder on a read-only bind mount (read-only even for root, as CI runs); skipped where this
    machine does not allow mounting."""
    import subprocess

    src, mnt = tmp_path / "src", tmp_path / "ro"
    (src / "poisons").mkdir(parents=True)
    mnt.mkdir()
    ok = subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True).returncode == 0
    if ok and subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        ok = False
    if not ok:
        pytest.skip("cannot make a read-only bind mount here (needs root and mount rights)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_read_only_cache_folder_costs_no_result(monkeypatch, read_only_folder):
    """The cache's promise on a read-only folder: notebooks 05 and 06 design poisons through it
    (this raised PermissionError on a checkpoint path the cache chose itself)."""
    exp = _digits_experiment()
    monkeypatch.setenv("NTKLIB_CACHE_DIR", "off")
    want = pipeline.design_poisons(exp, [1, 2], opt_steps=3, progress=False)
    monkeypatch.setenv("NTKLIB_CACHE_DIR", str(read_only_folder))
    with pytest.warns(UserWarning, match="Read-only file system"):
        got = pipeline.design_poisons(exp, [1, 2], opt_steps=3, progress=False)
    for b in (1, 2):
        np.testing.assert_array_equal(got[b]["X_p"], want[b]["X_p"])


def test_a_damaged_cache_checkpoint_is_set_aside_and_the_budget_redone(monkeypatch, tmp_path):
    from ntklib import cache

    exp = _digits_experiment()
    monkeypatch.setenv("NTKLIB_CACHE_DIR", "off")
    want = pipeline.design_poisons(exp, [2], opt_steps=3, progress=False)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "budget_2.npz").write_bytes(b"\x00" * 64)
    monkeypatch.setattr(cache, "scratch", lambda kind, key: folder)
    with pytest.warns(UserWarning, match=r"could not be resumed.*moved to .*budget_2.npz.damaged"):
        got = pipeline.design_poisons(exp, [2], opt_steps=3, progress=False)
    np.testing.assert_array_equal(got[2]["X_p"], want[2]["X_p"])
    assert (folder / "budget_2.npz.damaged").read_bytes() == b"\x00" * 64


def test_foreign_and_misshapen_cache_entries_are_ignored_and_rewritten(monkeypatch, tmp_path):
    """An entry of another layout (a valid .npz without 'meta') or with arrays of the wrong shape is
    a miss: warned about, trained afresh, rewritten; the victim equals the uncached one."""
    monkeypatch.setenv("NTKLIB_CACHE_DIR", str(tmp_path))
    arch = models.plain_mlp(8)
    task = data.make_task("digits", n_train_per_class=10, n_eval_per_class=3, n_test_per_class=3, seed=0)
    cfg = train.TrainConfig(steps=20, lr=0.5)
    first = train.train_many(arch, [(task.X_d, task.y_d)], cfg, progress=False)[0]
    (entry,) = (tmp_path / "victims").glob("*.npz")
    good = dict(np.load(entry))
    for bad in (dict(x=np.zeros(3)), dict(good, leaf_0=np.zeros((3, 3))), dict(good, meta=np.array("{not json"))):
        np.savez(entry, **bad)
        with pytest.warns(UserWarning, match="does not hold what this request expects"):
            again = train.train_many(arch, [(task.X_d, task.y_d)], cfg, progress=False)[0]
        for a, b in zip(jax.tree_util.tree_leaves(first.params), jax.tree_util.tree_leaves(again.params), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert set(np.load(entry).files) == set(good), "the entry is rewritten"


def test_a_full_disk_leaves_no_temporary_file(monkeypatch, tmp_path):
    from ntklib import cache

    monkeypatch.setenv("NTKLIB_CACHE_DIR", str(tmp_path))
    real = np.savez

    def full(path, **arrays):
        real(path, **arrays)  # half a file on disk, then the error
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.np, "savez", full)
    with pytest.warns(UserWarning, match="No space left on device"):
        assert cache.save("victims", "k", {"a": np.zeros(3)}) is None
    assert not list(tmp_path.rglob("*.npz")), "no .tmp.npz may stay behind"


# ---------------------------------------------------------------------------- faults: runs and the book
def test_a_notebook_that_did_not_finish_never_has_the_final_name(tmp_path):
    pm = pytest.importorskip("papermill", reason="the notebooks need the Jupyter stack (make test has it)")

    out = tmp_path / "executed"
    out.mkdir()
    (out / "02_backdoor_loss.ipynb").write_text("{}")  # an earlier run's copy
    with pytest.raises(pm.PapermillExecutionError):
        runner.run(runner.notebook_sources(["02"])[0], {"kernel": "magic", "fig_dir": str(tmp_path)}, out,
                   timeout=120)
    assert (out / "02_backdoor_loss.failed.ipynb").exists()
    assert not (out / "02_backdoor_loss.ipynb").exists() and not (out / "02_backdoor_loss.running.ipynb").exists()


def test_the_book_marks_failed_runs_and_shows_sources_for_unfinished_ones(tmp_path, capsys):
    """A failed run's page is what it showed, under a warning; a run cut off (``.running``) or never
    made shows the committed source and how to run it; bad paths are refused before Sphinx runs."""
    nbformat = pytest.importorskip("nbformat", reason="the book needs the Jupyter stack (make test has it)")
    pytest.importorskip("sphinx", reason="the book needs Sphinx (make test has it)")
    from ntklib import book

    src = tmp_path / "executed"
    src.mkdir()
    names = [p.stem for p in runner.notebook_sources()]

    def executed(title):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n**What this shows.** It ran."),
                    nbformat.v4.new_code_cell("1 + 1", outputs=[nbformat.v4.new_output(
                        "execute_result", {"text/plain": "2"}, execution_count=1)])]
        return nb

    nbformat.write(executed("First"), src / f"{names[0]}.ipynb")
    nbformat.write(executed("Second"), src / f"{names[1]}.failed.ipynb")
    nbformat.write(executed("Third"), src / f"{names[2]}.running.ipynb")
    states = book.stage(src, tmp_path / "stage")
    assert [states[n] for n in names[:4]] == ["executed", "failed", "unfinished", "not run"]

    def page(name):
        return nbformat.read(tmp_path / "stage" / "notebooks" / f"{name}.ipynb", as_version=4)

    assert page(names[0]).cells[0].source.startswith("# First") and page(names[0]).cells[1].outputs
    assert "did not finish in the last run" in page(names[1]).cells[1].source
    for cut_off in (names[2], names[3]):  # the repository's source, without outputs, and how to run it
        nb = page(cut_off)
        assert "Third" not in nb.cells[0].source and "Not executed yet" in nb.cells[1].source
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file; the book is a folder"):
        book.build(src, tmp_path / "afile")
    with pytest.raises(ValueError, match="is a file; give the folder of executed notebooks"):
        book.build(tmp_path / "afile", tmp_path / "book")


# ---------------------------------------------------------------------------- refused before the expensive work
def test_study_inputs_are_refused_before_any_victim_trains(env, monkeypatch):
    def no_training(*a, **kw):
        raise AssertionError("trained before the inputs were checked")

    monkeypatch.setattr(train, "train_many", no_training)
    monkeypatch.setattr(reconstruction, "train_victim", no_training)
    with pytest.raises(ValueError, match="detectors\\[1\\]='spectrall' is invalid"):
        defense_study.detection_study(env["exp"], env["sets"], ["spectral", "spectrall"])
    with pytest.raises(ValueError, match="there is no infinite-width kernel"):
        defense_study.detection_study(env["exp"], env["sets"], ["spectral_inf"])
    with pytest.raises(ValueError, match="X_unseen holds 3 images"):
        reconstruction.run(env["X"], env["y"], 8, X_unseen=env["X"][:3])
    with pytest.raises(ValueError, match="threshold=2 is invalid"):
        reconstruction.run(env["X"], env["y"], 8, threshold=2)
