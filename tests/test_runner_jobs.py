"""ntklib.runner --jobs: notebooks side by side in child processes (runner.run_at_once), with fake
children that sleep and write their timings: at most `jobs` at a time, 06 and 07 only after 05
(runner.AFTER), a failure stops new starts, and the main entry passes the parameters on."""
import json
import sys
from pathlib import Path

import pytest

from ntklib import runner

CHILD = """
import json, sys, time
stem, timings, log, pause, rc = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
with open(log, "a") as f:
    f.write(f"start {stem} {time.time()}\\n")
time.sleep(pause)
with open(log, "a") as f:
    f.write(f"end {stem} {time.time()}\\n")
print(f"[1/1] {stem} ... done in {pause:.0f} s (rest {pause:.0f} s); figures in figures/{stem}/")
json.dump({"notebook_profile": {stem: {"victim training": 0.0, "rest": pause}}}, open(timings, "w"))
sys.exit(rc)
"""


def _fake(tmp_path, pauses, fail=()):
    log = tmp_path / "events.log"

    def command(path, timings):
        return [sys.executable, "-c", CHILD, path.stem, timings, str(log), str(pauses.get(path.stem, 0.3)),
                "1" if path.stem in fail else "0"]

    def events():
        out = {}
        for line in log.read_text().splitlines():
            kind, stem, t = line.split()
            out[(kind, stem)] = float(t)
        return out

    return command, events


def _paths(*stems):
    return [Path(f"notebooks/{s}.py") for s in stems]


def test_at_most_jobs_at_a_time_and_the_cache_users_wait_for_05(tmp_path):
    stems = ["01_a", "05_b", "06_c", "07_d", "08_e"]
    command, events = _fake(tmp_path, {"05_b": 1.5})
    lines = []
    seconds, profile, failed = runner.run_at_once(_paths(*stems), 2, command, poll=0.05, report=lines.append)
    ev = events()
    assert failed == [] and set(seconds) == set(stems) and profile["05_b"]["rest"] == 1.5
    assert ev[("start", "06_c")] >= ev[("end", "05_b")] and ev[("start", "07_d")] >= ev[("end", "05_b")]
    assert ev[("start", "08_e")] < ev[("end", "05_b")]  # not held up: it reuses nothing
    times = sorted((t, +1 if k == "start" else -1) for (k, _), t in ev.items())  # an end before a start at a tie
    live = peak = 0
    for _, d in times:
        live += d
        peak = max(peak, live)
    assert peak == 2
    assert [ln.split("]")[0] for ln in lines] == ["[1/5", "[2/5", "[3/5", "[4/5", "[5/5"]
    assert any(ln.endswith("05_b ... done in 2 s (rest 2 s); figures in figures/05_b/") for ln in lines)


def test_a_failure_stops_new_starts_and_is_reported(tmp_path):
    command, events = _fake(tmp_path, {"01_a": 0.1, "02_b": 1.0}, fail={"01_a"})
    lines = []
    seconds, _, failed = runner.run_at_once(_paths("01_a", "02_b", "03_c", "04_d"), 2, command, poll=0.05,
                                            report=lines.append)
    ev = events()
    assert failed == ["01_a", "03_c", "04_d"] and set(seconds) == {"02_b"}  # 02 was running: it finished
    assert ("start", "03_c") not in ev and "01_a failed" in lines[0]


def test_start_order_puts_the_longest_chain_first():
    stems = ["01_a", "02_b", "05_c", "06_d", "07_e", "09_f"]
    cost = {"01_a": 30, "02_b": 15, "05_c": 100, "06_d": 350, "07_e": 320, "09_f": 180}
    # 05's chain is 100 + 350 (06 waits for it), 09's is its own 180: the short ones come last
    assert runner.start_order(stems, cost) == ["05_c", "06_d", "07_e", "09_f", "01_a", "02_b"]
    assert runner.start_order(stems, None) == stems and runner.start_order(stems, {}) == stems
    # a notebook with no recorded time counts as the mean of the others (here 120: 07 before 02's
    # 100, where 0 would put it last); 05's chain 250 beats 09's 200
    order = runner.start_order(stems, {"01_a": 50, "02_b": 100, "05_c": 100, "06_d": 150, "09_f": 200})
    assert order == ["05_c", "09_f", "06_d", "07_e", "02_b", "01_a"]
    # ties keep the given order
    assert runner.start_order(["03_x", "01_y", "02_z"], {"03_x": 1, "01_y": 1, "02_z": 1}) == ["03_x", "01_y", "02_z"]


def test_the_recorded_costs_order_the_starts(tmp_path):
    """One slot: the notebooks run one after the other in start_order, and 06 still waits for 05
    even though its chain is longer than 05's own time."""
    command, events = _fake(tmp_path, {s: 0.1 for s in ("01_a", "05_b", "06_c", "08_d")})
    cost = {"01_a": 1, "05_b": 2, "06_c": 9, "08_d": 4}
    _, _, failed = runner.run_at_once(_paths("01_a", "05_b", "06_c", "08_d"), 1, command, poll=0.02,
                                      report=lambda s: None, cost=cost)
    ev = events()
    starts = sorted((t, stem) for (kind, stem), t in ev.items() if kind == "start")
    assert failed == [] and [s for _, s in starts] == ["05_b", "06_c", "08_d", "01_a"]


def test_last_times_reads_a_matching_timings_file(tmp_path):
    path = tmp_path / "t_{platform}.json"
    real = tmp_path / "t_cpu.json"
    assert runner.last_times(str(path), {}) is None  # no file yet
    real.write_text(json.dumps({"parameters": {"seed": 1}, "notebook_seconds": {"01_a": 3.5, "05_b": 9}}))
    assert runner.last_times(str(path), {"seed": 1}) == {"01_a": 3.5, "05_b": 9.0}
    assert runner.last_times(str(path), {}) is None  # recorded with other parameters: not these runs' costs
    real.write_text("{not json")
    assert runner.last_times(str(path), {"seed": 1}) is None


def test_main_orders_the_run_by_the_last_timings(monkeypatch, tmp_path):
    seen = {}

    def fake_run_at_once(paths, jobs, command, **kw):
        seen.update(kw)
        return {p.stem: 1.0 for p in paths}, {}, []

    monkeypatch.setattr(runner, "run_at_once", fake_run_at_once)
    timings = tmp_path / "t.json"
    timings.write_text(json.dumps({"parameters": {"smoke": True}, "notebook_seconds": {"02_backdoor_loss": 2.0}}))
    assert runner.main(["02", "03", "--jobs", "2", "--smoke", "--out", str(tmp_path / "out"),
                        "--timings", str(timings)]) == 0
    assert seen["cost"] == {"02_backdoor_loss": 2.0}
    assert json.loads(timings.read_text())["notebook_seconds"] == {"02_backdoor_loss": 1.0,
                                                                   "03_greedy_initialization": 1.0}
    seen.clear()
    assert runner.main(["02", "03", "--jobs", "2", "--out", str(tmp_path / "out"), "--timings", str(timings)]) == 0
    assert seen["cost"] is None  # the file was written by a smoke run: other parameters


def test_main_hands_each_child_the_same_parameters(monkeypatch, tmp_path):
    seen = []

    def fake_run_at_once(paths, jobs, command, **kw):
        seen.extend(command(p, "T.json") for p in paths)
        return {p.stem: 1.0 for p in paths}, {}, []

    monkeypatch.setattr(runner, "run_at_once", fake_run_at_once)
    params = tmp_path / "p.yaml"
    params.write_text("seed: 1\n")
    assert runner.main(["02", "03", "--jobs", "2", "--params", str(params), "-p", "hinge_budget=3", "--smoke", "--out",
                        str(tmp_path / "out")]) == 0
    assert [c[3] for c in seen] == ["02_backdoor_loss", "03_greedy_initialization"]
    for c in seen:
        assert c[4:8] == ["--out", str(tmp_path / "out"), "--timings", "T.json"]
        assert c[8:] == ["--params", str(params), "-p", "hinge_budget=3", "--smoke"]
    assert runner.main(["02", "--jobs", "0"]) == 2


@pytest.mark.parametrize("argv", [["--jobs", "-1", "02"]])
def test_bad_jobs_is_refused(argv):
    assert runner.main(argv) == 2


@pytest.mark.slow
def test_two_smoke_notebooks_side_by_side(tmp_path, capsys):
    """The real children: each notebook executed, its figures written, the timings merged."""
    pytest.importorskip("papermill", reason="runs notebooks: make test's environment (test-current has no Jupyter)")
    out, figs, timings = tmp_path / "executed", tmp_path / "figures", tmp_path / "timings.json"
    assert runner.main(["02", "04", "--smoke", "--jobs", "2", "--out", str(out), "-p", f"fig_dir={figs}",
                        "--timings", str(timings)]) == 0
    assert (out / "02_backdoor_loss.ipynb").exists() and (out / "04_poison_optimization.ipynb").exists()
    assert (figs / "02_backdoor_loss" / "trigger.png").exists()
    assert (figs / "04_poison_optimization" / "poisons.png").exists()
    t = json.loads(timings.read_text())
    assert t["jobs"] == 2 and set(t["notebook_seconds"]) == {"02_backdoor_loss", "04_poison_optimization"}
    assert "kernel evaluation" in t["notebook_profile"]["02_backdoor_loss"]
    printed = capsys.readouterr().out
    assert "2 notebooks, 2 at a time" in printed and "[2/2]" in printed and "all 2 notebooks" in printed
