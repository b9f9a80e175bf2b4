"""Greedy initialization: rank-one scoring vs naive re-solves.

One greedy round scores every candidate of the pool by the loss after adding it.
``rank_one`` uses the Schur-complement update (ntklib.regression.append_predictions);
``naive`` factorizes the enlarged (|d| + 1) system once per candidate. Both use the
same precomputed kernel blocks, so only the scoring is timed. The script also checks
that both pick the same candidate (and agree on every score).

Default: CIFAR-10 truck -> deer (needs NTKLIB_DATA_DIR or data/), |d| = 500, 1000,
2000, a pool of 1000, infinite-width ReLU-MLP NTK. ``--quick``: digits, small sizes.

    python bench/greedy.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from kernels import machine  # noqa: E402
from ntklib import attack, data, kernels, models  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        dataset, src, tgt, sizes, pool, n_eval = "digits", 7, 1, [25, 50], 20, 10
    else:
        dataset, src, tgt, sizes, pool, n_eval = "cifar10", 9, 4, [250, 500, 1000], 1000, 200
    kernel = kernels.infinite_ntk(models.mlp(512))
    rows = []
    for per_class in sizes:
        task = data.make_task(dataset, src, tgt, n_train_per_class=per_class, n_eval_per_class=n_eval,
                              n_test_per_class=10)
        cand = data.make_task(dataset, src, tgt, n_eval_per_class=n_eval, n_test_per_class=10).X_cand[:pool]
        P = attack.BackdoorProblem.from_task(task, kernel)
        blocks = P.candidate_blocks(cand)
        t = {}
        scores = {}
        for meth in ("rank_one", "naive"):
            t0 = time.perf_counter()
            scores[meth] = attack.score_candidates(P, cand, [], meth, blocks=blocks)[1]
            t[meth] = time.perf_counter() - t0
        same = int(np.argmin(scores["rank_one"])) == int(np.argmin(scores["naive"]))
        rel = float(np.max(np.abs(scores["rank_one"] - scores["naive"]) / np.abs(scores["naive"])))
        rows.append(dict(n_d=len(task.X_d), pool=len(cand), rank_one_s=t["rank_one"], naive_s=t["naive"],
                         speedup=t["naive"] / t["rank_one"], same_pick=same, max_rel_score_diff=rel))
        print(f"|d|={len(task.X_d):5d} pool={len(cand):5d}  rank-one {t['rank_one']:8.3f} s  naive "
              f"{t['naive']:8.2f} s  speedup {rows[-1]['speedup']:7.1f}x  same pick: {same}  "
              f"max rel score diff {rel:.1e}", flush=True)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / (
        f"greedy_{machine()['platform']}{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(machine=machine(), dataset=dataset, kernel=kernel.spec, rows=rows), indent=2))
    print("saved", out)
    return 0 if all(r["same_pick"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
