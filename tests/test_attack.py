import json

import numpy as np
import pytest

from ntklib import attack, backdoor_loss, data, greedy, kernels, models, poison_optimization


@pytest.fixture(scope="module")
def task():
    return data.make_task("digits", source=7, target=1, n_train_per_class=15, n_eval_per_class=6, seed=0)


@pytest.fixture(scope="module")
def toy(task):
    """Float64 RBF kernel, 30 clean points, 10 candidates: brute force is cheap."""
    k = kernels.rbf(2.0, dtype="float64")
    return backdoor_loss.BackdoorProblem.from_task(task, k, w_attack=2.0), task.X_cand[:10]


def test_attack_is_the_three_modules_under_one_name(toy):
    """ntklib.attack re-exports the loss, greedy and optimization modules' objects (not copies),
    and the helpers those modules share accept what they should and name what they refuse."""
    for module in (backdoor_loss, greedy, poison_optimization):
        for name in module.__all__:
            if name in attack.__all__:
                assert getattr(attack, name) is getattr(module, name), name
    assert set(attack.__all__) <= set(backdoor_loss.__all__) | set(greedy.__all__) | set(poison_optimization.__all__)
    P, _ = toy
    ens = backdoor_loss.EnsembleProblem([P, P])
    assert backdoor_loss.members(P) == [P] and backdoor_loss.members(ens) == [P, P]
    assert backdoor_loss.check_problem(ens) is ens and backdoor_loss.check_problem(P, ensemble=False) is P
    with pytest.raises(TypeError, match="or an EnsembleProblem"):
        backdoor_loss.check_problem("not a problem")
    with pytest.raises(TypeError, match="must be an ntklib.attack.BackdoorProblem"):
        backdoor_loss.check_problem(ens, ensemble=False)


def test_loss_equals_textbook_formula(toy):
    """The loss (clean factor + appended poison block) equals the formula computed from
    scratch: f = K(x, D) (K_DD + s I)^-1 y_D on D = d + poisons labelled +1."""
    P, C = toy
    X_p = C[[1, 4, 6]]
    D = np.concatenate([P.X_d, X_p])
    y = np.concatenate([P.y_d, np.ones(3)])
    K = P.kernel(D)
    alpha = np.linalg.solve(K + P.shift * np.eye(len(D)), y)
    f_t, f_a = P.kernel(P.X_t, D) @ alpha, P.kernel(P.X_a, D) @ alpha
    clean = np.sum((f_t - P.y_t) ** 2)
    attack_term = 2.0 * np.sum(np.minimum(f_a - 1, 0) ** 2)  # toy uses w_attack = 2
    r = P.loss(X_p)
    np.testing.assert_allclose([r.loss, r.clean_loss, r.attack_loss], [clean + attack_term, clean, attack_term],
                               rtol=1e-9)
    np.testing.assert_allclose(r.f_t, f_t, rtol=1e-9, atol=1e-12)


def test_greedy_round_equals_brute_force(toy):
    """Each greedy pick is the argmin over candidates of the fully re-solved loss."""
    P, C = toy
    g = attack.greedy_init(P, C, 4, progress=False)
    chosen = []
    for k in range(4):
        rest = [j for j in range(len(C)) if j not in chosen]
        brute = [P.loss(C[chosen + [j]]).loss for j in rest]
        assert rest[int(np.argmin(brute))] == g.indices[k]
        np.testing.assert_allclose(g.losses[k], min(brute), rtol=1e-10)
        chosen.append(g.indices[k])


@pytest.mark.parametrize("budget", [1, 2, 3])
def test_greedy_with_swap_equals_exhaustive_search(toy, budget):
    """On this toy problem greedy + swap finds the exhaustive optimum (budget 1 is a
    theorem; for 2-3 it is a property of the instance, checked by brute force)."""
    P, C = toy
    best, best_loss = attack.exhaustive_search(P, C, budget)
    g = attack.greedy_init(P, C, budget, swap=True, progress=False)
    assert sorted(g.indices) == sorted(best)
    np.testing.assert_allclose(g.losses[-1], best_loss, rtol=1e-10)
    assert g.losses[-1] <= g.losses[budget - 1] + 1e-12  # swap never hurts


def _grad_check(P, X_p, h=1e-5, rtol=1e-5):
    res, g = P.evaluate(X_p, grad=True)
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = rng.normal(size=X_p.shape)
        fd = (P.loss(X_p + h * v).loss - P.loss(X_p - h * v).loss) / (2 * h)
        np.testing.assert_allclose(np.sum(g * v), fd, rtol=rtol)


@pytest.mark.parametrize("kind", ["infinite", "empirical"])
def test_loss_gradient_matches_finite_differences_float64(task, kind):
    arch = models.mlp(16, activation="erf")
    k = kernels.make_kernel(kind, arch, params=arch.init(0, (8, 8, 1)), dtype="float64")
    P = attack.BackdoorProblem.from_task(task, k, ridge=1e-3, w_attack=3.0)
    X_p = 0.25 + 0.5 * task.X_cand[:3]  # interior of the box, so x +/- h v stays valid
    assert P.loss(X_p).attack_loss > 0  # the hinge is active
    _grad_check(P, X_p)


@pytest.fixture(scope="module")
def ensemble(task):
    """Two float64 RBF kernels of different lengthscales on the toy task."""
    members = [attack.BackdoorProblem.from_task(task, kernels.rbf(ls, dtype="float64"), w_attack=2.0)
               for ls in (2.0, 4.0)]
    return attack.EnsembleProblem(members), task.X_cand[:10]


def test_ensemble_loss_is_members_mean_and_gradient_matches_fd(ensemble):
    """The ensemble loss is the mean of the members' exact losses; its gradient matches
    central differences of that mean (float64); an ensemble of one is the member itself."""
    E, C = ensemble
    X_p = 0.25 + 0.5 * C[[1, 4]]
    r = E.loss(X_p)
    losses = [m.loss(X_p) for m in E.members]
    np.testing.assert_allclose(r.loss, np.mean([x.loss for x in losses]), rtol=1e-12)
    np.testing.assert_allclose(r.asr, np.mean([x.asr for x in losses]), rtol=1e-12)
    assert losses[0].loss != pytest.approx(losses[1].loss, rel=1e-3)  # the members really differ
    _grad_check(E, X_p)
    one = attack.EnsembleProblem(E.members[:1])
    np.testing.assert_allclose(one.evaluate(X_p, grad=True)[1], E.members[0].evaluate(X_p, grad=True)[1],
                               rtol=1e-12)
    assert attack.greedy_init(one, C, 3, progress=False).indices == \
        attack.greedy_init(E.members[0], C, 3, progress=False).indices


def test_ensemble_greedy_equals_brute_force_and_optimizes(ensemble):
    """Each ensemble greedy pick minimizes the mean of the members' fully re-solved losses
    (with swap: the exhaustive optimum of the mean); optimization lowers the mean loss."""
    E, C = ensemble
    g = attack.greedy_init(E, C, 3, progress=False)
    chosen = []
    for k in range(3):
        rest = [j for j in range(len(C)) if j not in chosen]
        brute = [np.mean([m.loss(C[chosen + [j]]).loss for m in E.members]) for j in rest]
        assert rest[int(np.argmin(brute))] == g.indices[k]
        np.testing.assert_allclose(g.losses[k], min(brute), rtol=1e-10)
        chosen.append(g.indices[k])
    best, best_loss = attack.exhaustive_search(E, C, 2)
    gs = attack.greedy_init(E, C, 2, swap=True, progress=False)
    assert gs.losses[-1] <= gs.losses[1] + 1e-12 and gs.losses[-1] >= best_loss - 1e-12
    o = attack.optimize_poisons(E, C[g.indices], steps=5, progress=False)
    assert o.final.loss < o.start.loss and 0 <= o.X_p.min() and o.X_p.max() <= 1


def test_ensemble_bad_input(task, ensemble):
    E, _ = ensemble
    other = data.make_task("digits", source=7, target=1, n_train_per_class=10, n_eval_per_class=6, seed=0)
    with pytest.raises(ValueError, match="only the kernel may differ"):
        attack.EnsembleProblem([E.members[0], attack.BackdoorProblem.from_task(other, kernels.rbf(2.0))])
    with pytest.raises(ValueError, match="at least one"):
        attack.EnsembleProblem([])
    with pytest.raises(TypeError, match="list of"):
        attack.EnsembleProblem(E.members[0])
    with pytest.raises(ValueError, match="one set of candidate blocks per ensemble member"):
        attack.greedy_init(E, task.X_cand[:10], 2, progress=False, blocks=[None])
    with pytest.raises(TypeError, match="BackdoorProblem"):
        attack.score_candidates(E, task.X_cand[:10])


@pytest.mark.parametrize("method", ["lbfgsb", "adam"])
def test_optimization_stays_in_box_lowers_loss_and_resumes_exactly(toy, method, tmp_path):
    P, C = toy
    X0 = C[[0, 1]]
    kw = dict(method=method, lr=0.05, checkpoint_every=3, progress=False)
    full = attack.optimize_poisons(P, X0, steps=8, **kw)
    assert full.X_p.min() >= 0 and full.X_p.max() <= 1
    assert full.final.loss < full.start.loss
    ck = tmp_path / "ck.npz"
    part = attack.optimize_poisons(P, X0, steps=3, checkpoint=ck, **kw)  # "interrupted" at 3
    assert part.steps == 3 and ck.exists()
    resumed = attack.optimize_poisons(P, X0, steps=8, checkpoint=ck, **kw)
    np.testing.assert_array_equal(resumed.X_p, full.X_p)
    np.testing.assert_array_equal(resumed.history["loss"], full.history["loss"])
    with pytest.raises(attack.CheckpointMismatchError, match="checkpoint_every"):
        attack.optimize_poisons(P, X0, steps=8, checkpoint=ck, **dict(kw, checkpoint_every=4))
    with pytest.raises(attack.CheckpointMismatchError, match="X_p0"):
        attack.optimize_poisons(P, C[[2, 3]], steps=8, checkpoint=ck, **kw)


def test_same_seed_same_poisons(task):
    def run():
        k = kernels.infinite_ntk(models.mlp(64))
        P = attack.BackdoorProblem.from_task(task, k)
        g = attack.greedy_init(P, task.X_cand, 2, progress=False)
        return attack.optimize_poisons(P, task.X_cand[g.indices], steps=3, progress=False).X_p
    np.testing.assert_array_equal(run(), run())
    np.testing.assert_array_equal(attack.sampling_baseline(50, 5, 1), attack.sampling_baseline(50, 5, 1))


def test_ntba_beats_sampling_in_kernel_model_on_digits_default():
    task = data.make_task()  # digits 7 -> 1, periodic trigger
    P = attack.BackdoorProblem.from_task(task, kernels.infinite_ntk(models.mlp(512)))
    budget = 3
    ntba = attack.greedy_init(P, task.X_cand, budget, progress=False).asr[-1]
    samp = np.mean([P.loss(task.X_cand[attack.sampling_baseline(len(task.X_cand), budget, s)]).asr
                    for s in range(5)])
    assert ntba > samp + 0.3, (ntba, samp)


def test_bad_input(task, toy):
    P, C = toy
    with pytest.raises(ValueError, match=r"budget=11 is invalid: must be >= 1 and <= 10; a budget counts poisons"):
        attack.greedy_init(P, C, 11, progress=False)
    with pytest.raises(ValueError, match=r"budget=6 is invalid: must be >= 0 and <= 5"):
        attack.sampling_baseline(5, 6)
    k = kernels.rbf()
    with pytest.raises(ValueError, match="set t is empty"):
        attack.BackdoorProblem(k, task.X_d, task.y_d, task.X_t[:0], task.y_t[:0], task.X_a)
    with pytest.raises(ValueError, match="attack set a is empty"):
        attack.BackdoorProblem(k, task.X_d, task.y_d, task.X_t, task.y_t, task.X_a[:0])
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        P.loss(C[:2] * 3)
    with pytest.raises(ValueError, match="NaN"):
        P.loss(C[:2] * np.nan)
    with pytest.raises(ValueError, match="expected \\(8, 8, 1\\)"):
        P.loss(np.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="labels must be"):
        attack.BackdoorProblem(k, task.X_d, task.y_d * 2, task.X_t, task.y_t, task.X_a)


def test_singular_kernel_error_says_which_block(task):
    zero = kernels.user_kernel(lambda a, b: 0.0 * (a.reshape(len(a), -1) @ b.reshape(len(b), -1).T), name="zero")
    with pytest.raises(np.linalg.LinAlgError, match="K_dd .*not positive definite.*ridge.*float64"):
        attack.BackdoorProblem.from_task(task, zero, jitter=0.0)


def test_rank_one_scores_equal_naive_scores(toy):
    P, C = toy
    for chosen in ([], [3, 7]):
        r1, l1 = attack.score_candidates(P, C, chosen, "rank_one")
        r2, l2 = attack.score_candidates(P, C, chosen, "naive")
        assert r1 == r2 and len(r1) == 10 - len(chosen)
        np.testing.assert_allclose(l1, l2, rtol=1e-9)


def test_attack_runs_without_neural_tangents():
    """With neural-tangents unimportable (as on a GPU box with a current JAX), a plain-JAX
    network + empirical NTK still runs the whole attack, and stax models say what to do.
    (Where neural-tangents is not installed, `make test-current`, every test runs that way.)"""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("neural_tangents") is None:
        pytest.skip("neural-tangents is not installed: the whole suite runs without it here")

    code = """
import sys
sys.modules["neural_tangents"] = None  # any import of it now raises ImportError
import numpy as np
from ntklib import attack, data, evaluate, kernels, models, train
task = data.make_task(n_train_per_class=20, n_eval_per_class=5, n_test_per_class=10)
arch = models.plain_mlp(32)
clean = train.train(arch, task.X_d, task.y_d, train.TrainConfig(steps=100), progress=False)
P = attack.BackdoorProblem.from_task(task, kernels.empirical_ntk(arch.apply_fn, clean.params))
g = attack.greedy_init(P, task.X_cand, 2, progress=False)
o = attack.optimize_poisons(P, task.X_cand[g.indices], steps=2, progress=False)
rows = evaluate.transfer(task, arch, o.X_p, train.TrainConfig(steps=50))
assert "tensorflow" not in sys.modules
try:
    models.mlp()
except ImportError as e:
    assert "plain_mlp" in str(e)
else:
    raise AssertionError("models.mlp should need neural-tangents")
print("ok", o.final.loss <= o.start.loss, rows[0]["net_asr"])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok True"), r.stdout + r.stderr[-2000:]


def ref_swap_pass(P, C, chosen, loss, max_sweeps=20):
    """The swap refinement written out with full re-solves: sweep over the chosen positions, replace
    position i by the unchosen candidate of lowest loss when that lowers the loss (first improvement,
    in place), until a sweep changes nothing. Returns (chosen in order, number of swaps)."""
    chosen, swaps = list(chosen), 0
    for _ in range(max_sweeps):
        improved = False
        for i in range(len(chosen)):
            keep = chosen[:i] + chosen[i + 1:]
            rest = [j for j in range(len(C)) if j not in chosen]
            losses = [P.loss(C[keep + [j]]).loss for j in rest]
            if min(losses) < loss * (1 - 1e-12):
                chosen[i], loss, improved, swaps = rest[int(np.argmin(losses))], min(losses), True, swaps + 1
        if not improved:
            break
    return chosen, swaps


@pytest.fixture(scope="module")
def swap_toy(task):
    """An instance where greedy is not optimal: the swap pass makes two swaps (found by search)."""
    return attack.BackdoorProblem.from_task(task, kernels.rbf(1.0, dtype="float64"), w_attack=2.0), task.X_cand[:14]


@pytest.mark.parametrize("budget", [2, 5])
def test_the_swap_pass_equals_its_re_solved_reference(swap_toy, budget):
    P, C = swap_toy
    greedy = attack.greedy_init(P, C, budget, progress=False)
    want, swaps = ref_swap_pass(P, C, greedy.indices, greedy.losses[-1])
    got = attack.greedy_init(P, C, budget, swap=True, progress=False)
    assert swaps == 2 and got.swaps == swaps  # the instance really swaps (twice)
    assert got.indices == want  # the same poisons in the same positions
    np.testing.assert_allclose(got.losses[-1], P.loss(C[want]).loss, rtol=1e-10)
    assert got.losses[-1] < greedy.losses[-1]
    # every candidate chosen: nothing to swap with
    assert attack.greedy_init(P, C[:3], 3, swap=True, progress=False).swaps == 0


def test_ensemble_results_are_the_members_means_field_by_field(ensemble):
    E, C = ensemble
    X_p = C[[1, 4]]
    r, parts = E.loss(X_p), [m.loss(X_p) for m in E.members]
    for key in ("loss", "clean_loss", "attack_loss", "clean_acc", "asr"):
        np.testing.assert_allclose(getattr(r, key), np.mean([getattr(p, key) for p in parts]), rtol=1e-12)
        assert r.as_dict()[key] == getattr(r, key)
    assert set(r.as_dict()) == {"loss", "clean_loss", "attack_loss", "clean_acc", "asr"}
    for key in ("f_t", "f_a"):
        np.testing.assert_allclose(getattr(r, key), np.mean([getattr(p, key) for p in parts], axis=0), rtol=1e-12)
        assert getattr(r, key).shape == getattr(parts[0], key).shape
    f_t, f_a = r.f_t[:, None] + np.zeros((1, 3)), r.f_a[:, None] + np.zeros((1, 3))
    for got, want in zip(E.terms(f_t, f_a), E.members[0].terms(f_t, f_a), strict=True):
        np.testing.assert_array_equal(got, want)
    assert E.kernel is E.members[0].kernel
    fp = E.fingerprint()
    assert fp["data"] == E.members[0].fingerprint()["data"]
    assert [k["lengthscale"] for k in json.loads(fp["kernel"])] == [2.0, 4.0]
    one = attack.EnsembleProblem(E.members[:1]).fingerprint()
    assert json.loads(one["kernel"]) == [json.loads(E.members[0].fingerprint()["kernel"])]


def test_an_ensemble_names_the_member_that_differs(task):
    members = [attack.BackdoorProblem.from_task(task, kernels.rbf(2.0, dtype="float64"), ridge=r)
               for r in (0.0, 0.0, 0.1)]
    with pytest.raises(ValueError, match=r"problems\[2\] differs from problems\[0\] in \['ridge'\]"):
        attack.EnsembleProblem(members)


@pytest.mark.parametrize("change", ["ridge", "jitter", "w_clean", "w_attack", "data", "kernel"])
def test_a_checkpoint_of_another_problem_is_refused_naming_what_differs(task, tmp_path, change):
    def problem(**kw):
        ls = kw.pop("lengthscale", 2.0)
        t = kw.pop("task", task)
        return attack.BackdoorProblem.from_task(t, kernels.rbf(ls, dtype="float64"), **kw)

    ck = tmp_path / "ck.npz"
    P = problem()
    X0 = task.X_cand[[0, 1]]
    attack.optimize_poisons(P, X0, steps=2, checkpoint=ck, checkpoint_every=1, progress=False)
    other = {"ridge": dict(ridge=0.1), "jitter": dict(jitter=1e-6), "w_clean": dict(w_clean=2.0),
             "w_attack": dict(w_attack=2.0), "kernel": dict(lengthscale=3.0),
             "data": dict(task=data.make_task("digits", source=7, target=1, n_train_per_class=15,
                                              n_eval_per_class=6, seed=1))}[change]
    with pytest.raises(attack.CheckpointMismatchError, match=rf"\({change} differ\)"):
        attack.optimize_poisons(problem(**other), X0, steps=4, checkpoint=ck, checkpoint_every=1, progress=False)
    # the same start in float32 (equal values) is the same run
    res = attack.optimize_poisons(P, X0.astype(np.float32), steps=2, checkpoint=ck, checkpoint_every=1,
                                  progress=False)
    assert res.steps == 2


def test_the_fingerprint_holds_a_kernel_spec_that_is_not_json(toy):
    from pathlib import Path

    P, _ = toy
    k = kernels.rbf(2.0, dtype="float64")
    k.spec["source"] = Path("weights") / "net.npz"
    fp = attack.BackdoorProblem(k, P.X_d, P.y_d, P.X_t, P.y_t, P.X_a).fingerprint()
    assert json.loads(fp["kernel"])["source"] == str(Path("weights") / "net.npz")
    assert list(json.loads(fp["kernel"])) == sorted(json.loads(fp["kernel"]))


def test_damaged_checkpoints_are_refused_and_left_in_place(toy, tmp_path):
    P, C = toy
    X0 = C[[0, 1]]
    ck = tmp_path / "ck.npz"
    attack.optimize_poisons(P, X0, steps=2, checkpoint=ck, checkpoint_every=1, progress=False)
    with np.load(ck) as z:
        state = {k: z[k] for k in z.files}
    for name, edit in [("missing", lambda s: s.pop("adam_m")),
                       ("pickled", lambda s: s.update(adam_m=np.array([{"a": 1}], dtype=object))),
                       ("extra key", lambda s: s.update(__fingerprint__=np.array(json.dumps(
                           dict(json.loads(str(s["__fingerprint__"])), extra="1")))))]:
        s = dict(state)
        edit(s)
        bad = tmp_path / f"{name}.npz"
        np.savez(bad, **s)
        kind = attack.CheckpointMismatchError if name == "extra key" else attack.CheckpointReadError
        with pytest.raises(kind, match=r"extra differ" if name == "extra key" else rf"{bad.name} cannot be read"):
            attack.optimize_poisons(P, X0, steps=4, checkpoint=bad, checkpoint_every=1, progress=False)
        assert bad.exists()


def test_a_failed_checkpoint_write_leaves_nothing_and_raises_the_disk_error(toy, tmp_path, monkeypatch):
    P, C = toy

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(poison_optimization.np, "savez", full_disk)
    with pytest.raises(OSError, match="No space left"):
        attack.optimize_poisons(P, C[[0, 1]], steps=2, checkpoint=tmp_path / "ck.npz", checkpoint_every=1,
                                progress=False)
    assert list(tmp_path.iterdir()) == []


def test_exhaustive_search_takes_pools_of_at_most_16(toy, task):
    P, _ = toy
    pool = np.concatenate([task.X_cand, task.X_cand])  # 15 candidates twice
    best, loss = attack.exhaustive_search(P, pool[:16], 1)
    assert len(best) == 1 and np.isfinite(loss)
    with pytest.raises(ValueError, match="pool of 17 is too large"):
        attack.exhaustive_search(P, pool[:17], 1)


# ---------------------------------------------------------------------------- gaps found by mutation (greedy)
@pytest.mark.parametrize("kind", ["single", "ensemble", "ensemble of one"])
def test_greedy_uses_the_blocks_it_is_given(toy, ensemble, monkeypatch, kind):
    """Precomputed candidate blocks (the pipeline reuses them across budgets) give the same picks and
    losses as blocks computed inside, and are used as given: no member computes its own. One problem
    takes one set of blocks, an ensemble (of any size) a list with one per member."""
    P, X = {"single": toy, "ensemble": ensemble,
            "ensemble of one": (backdoor_loss.EnsembleProblem(ensemble[0].members[:1]), ensemble[1])}[kind]
    members = backdoor_loss.members(P)
    blocks = [m.candidate_blocks(X) for m in members]
    ref = greedy.greedy_init(P, X, 3, progress=False)
    for m in members:
        monkeypatch.setattr(m, "candidate_blocks", lambda *_: pytest.fail("blocks recomputed"))
    got = greedy.greedy_init(P, X, 3, progress=False, blocks=blocks[0] if kind == "single" else blocks)
    assert got.indices == ref.indices and got.losses == ref.losses


def test_the_sampling_baseline_draws_without_replacement():
    """Distinct candidates: the whole pool at budget = pool size, and distinct picks at every seed."""
    np.testing.assert_array_equal(greedy.sampling_baseline(12, 12, seed=3), np.arange(12))
    for seed in range(20):
        picks = greedy.sampling_baseline(12, 9, seed=seed)
        assert len(set(picks.tolist())) == 9 and list(picks) == sorted(picks)


def test_weighted_loss_and_gradient_where_the_hinge_is_off_for_some_attack_images(task):
    """Weights other than 1 and an attack prediction above 1 (the hinge is off there and on for the
    others): the loss equals the formula, its float64 gradient matches finite differences, and the
    diagonal shift is ridge + jitter * mean(diag K_dd) with both settings used."""
    k = kernels.rbf(2.0, dtype="float64")
    X_a = 0.25 + 0.5 * task.X_a  # interior of the box, so x +/- h v stays valid
    P = backdoor_loss.BackdoorProblem(k, task.X_d, task.y_d, task.X_t, task.y_t, X_a, ridge=1e-3, jitter=1e-6,
                                      w_clean=0.5, w_attack=3.0)
    assert P.shift == pytest.approx(1e-3 + 1e-6 * np.mean(np.diag(k(task.X_d))), rel=1e-12)
    rng = np.random.default_rng(1)
    X_p = np.clip(np.stack([X_a[0] + 0.03 * rng.standard_normal(X_a[0].shape),
                            X_a[0] - 0.03 * rng.standard_normal(X_a[0].shape), 0.25 + 0.5 * task.X_cand[0]]),
                  0.01, 0.99)
    r = P.loss(X_p)
    assert (r.f_a > 1).any() and (r.f_a < 1).any()  # both sides of the hinge
    D = np.concatenate([P.X_d, X_p])
    alpha = np.linalg.solve(k(D) + P.shift * np.eye(len(D)), np.concatenate([P.y_d, np.ones(len(X_p))]))
    f_t, f_a = k(P.X_t, D) @ alpha, k(X_a, D) @ alpha
    clean, hinge = 0.5 * np.sum((f_t - P.y_t) ** 2), 3.0 * np.sum(np.minimum(f_a - 1, 0) ** 2)
    np.testing.assert_allclose([r.loss, r.clean_loss, r.attack_loss], [clean + hinge, clean, hinge], rtol=1e-8)
    _grad_check(P, X_p, h=1e-6, rtol=1e-5)


def test_terms_and_result_from_given_predictions(toy):
    """The loss terms and the kernel model's accuracy and ASR from predictions given directly: the
    hinge counts only attack predictions below 1, a prediction of exactly 0 is no success, and
    predictions with several columns are scored column by column."""
    P, _ = toy  # w_clean 1, w_attack 2
    f_t = 0.5 * P.y_t
    f_t[:2] *= -1  # two clean predictions on the wrong side
    f_a = np.resize([1.5, 0.0, -0.5, 2.5, 0.8], P.n_a)
    loss, clean, hinge = P.terms(f_t, f_a)
    want_clean = np.sum((f_t - P.y_t) ** 2)
    want_hinge = 2.0 * np.sum(np.where(f_a < 1, f_a - 1, 0.0) ** 2)
    np.testing.assert_allclose([loss, clean, hinge], [want_clean + want_hinge, want_clean, want_hinge], rtol=1e-12)
    r = P.result(f_t, f_a)
    assert r.clean_acc == pytest.approx(1 - 2 / P.n_t) and r.asr == pytest.approx(np.mean(f_a > 0))
    assert r.asr < np.mean(f_a >= 0)  # the zeros are not counted
    F_t, F_a = np.stack([f_t, -f_t, 0 * f_t], 1), np.stack([f_a, f_a + 1, f_a - 1], 1)
    cols = [P.terms(F_t[:, j], F_a[:, j]) for j in range(3)]
    for got, want in zip(P.terms(F_t, F_a), zip(*cols, strict=True), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_no_poisons_is_the_clean_kernel_model(toy):
    """An empty poison set: the clean model's loss (with and without a gradient) and a float64
    gradient of the empty set's shape."""
    P, _ = toy
    empty = np.zeros((0,) + P.shape, np.float32)
    res, g = P.evaluate(empty, grad=True)
    alpha = np.linalg.solve(P.kernel(P.X_d) + P.shift * np.eye(P.n_d), P.y_d)
    f_t, f_a = P.kernel(P.X_t, P.X_d) @ alpha, P.kernel(P.X_a, P.X_d) @ alpha
    np.testing.assert_allclose(res.f_t, f_t, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.f_a, f_a, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.loss, np.sum((f_t - P.y_t) ** 2) + 2.0 * np.sum(np.minimum(f_a - 1, 0) ** 2),
                               rtol=1e-9)
    assert g.shape == empty.shape and g.dtype == np.float64
    assert P.evaluate(empty).loss == res.loss


def test_the_fixed_blocks_are_float64_and_the_other_images_read_only(task):
    """With a float32 kernel the blocks that do not depend on the poisons are kept in float64 (K_dd
    symmetrized there); the images the kernel may cache from cannot be changed; an attack-only loss
    (w_clean = 0) is a valid problem."""
    k = kernels.rbf(2.0, dtype="float32")
    P = backdoor_loss.BackdoorProblem.from_task(task, k, w_clean=0.0, w_attack=1.0)
    assert not P.X_other.flags.writeable
    for name in ("K_dd", "K_td", "K_ad"):
        assert getattr(P, name).dtype == np.float64, name
    np.testing.assert_array_equal(P.K_dd, P.K_dd.T)
    r = P.loss(task.X_cand[:2])
    assert r.clean_loss == 0 and r.loss == r.attack_loss > 0
