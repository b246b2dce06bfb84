"""Hostile use, round 3: a sweep that cannot start leaves no sweep behind; a read-only store is
reported on and browsed (through a copy, nothing logged back); a cell that fails before its run
exists is a FAILED run that says why."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emergence_lab.store import connection, records, sweeps
from tests.conftest import ROOT, compose_cfg

pytestmark = pytest.mark.slow

TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]
REPORT = [sys.executable, str(ROOT / "scripts" / "report.py")]


def test_a_sweep_that_cannot_start_leaves_no_parent_behind(tmp_path, store):
    (tmp_path / "afile").touch()  # hydra.sweep.dir names a file: the sweep cannot start
    proc = subprocess.run([*TRAIN, "-m", "dataset=digits", "trainer.epochs=1",
                           f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path / 'afile'}"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0 and "Sweep not started" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sweeps.latest_sweep(store) is None  # nothing for make report to take for a sweep
    from mlflow.entities import ViewType

    client = connection.get_client(store)
    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    gone = client.search_runs(exps, "tags.kind = 'sweep'", run_view_type=ViewType.ALL)
    assert [(r.info.status, r.info.lifecycle_stage) for r in gone] == [("FAILED", "deleted")]


@pytest.fixture
def read_only_store(tmp_path, store):
    """A store with a finished sweep, seen through a read-only bind mount (root writes through
    file permissions; a read-only mount stops it)."""
    proc = subprocess.run([*TRAIN, "-m", "dataset=digits", "model.hidden=[16,8]",
                           "trainer.epochs=2", "pruning=magnitude", "pruning.amount=0,0.5",
                           "pruning.epoch=1", "tracking.progress=false", f"tracking.uri={store}"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    source, view = tmp_path / "mlruns", tmp_path / "ro"
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(source), str(view)]).returncode != 0:
        pytest.skip("no read-only bind mount here (needs root and mount)")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        yield f"sqlite:///{view / 'mlflow.db'}"
    finally:
        subprocess.run(["umount", str(view)])


def test_a_read_only_store_is_reported_on_and_browsed(tmp_path, read_only_store):
    before = sorted(p.name for p in (tmp_path / "ro").iterdir())
    proc = subprocess.run([*REPORT, "--tracking-uri", read_only_store],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and "--no-log" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([*REPORT, "--tracking-uri", read_only_store, "--no-log", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reads a copy" in proc.stderr and (tmp_path / "out" / "report.md").is_file()
    ui = subprocess.run([sys.executable, str(ROOT / "scripts" / "ui.py"), "--tracking-uri",
                         read_only_store, "--print-only"], capture_output=True, text=True,
                        timeout=120, cwd=tmp_path)
    assert ui.returncode == 0 and "latest sweep:" in ui.stdout, ui.stderr
    assert "browsing a copy" in ui.stderr
    assert sorted(p.name for p in (tmp_path / "ro").iterdir()) == before  # not a file more


def test_a_cell_that_fails_before_its_run_exists_is_a_failed_run_saying_why(tmp_path, store,
                                                                              tiny_overrides):
    """The job of a sweep whose data went missing after the sweep checked it (the job's own
    preflight finds it): a FAILED run of the cell, under the sweep, with the reason."""
    from emergence_lab.run.pipeline import train

    data = tmp_path / "data"
    data.mkdir()  # its files went away between the sweep's check and the job
    cfg = compose_cfg([o for o in tiny_overrides if not o.startswith("dataset=")]
                      + ["dataset=mnist", f"dataset.data_dir={data}", "dataset.sources=[]"])
    parent = sweeps.open_sweep(store, "emergence", "emergence-x", "hash-x", {"sweep_dir": "x"})
    with pytest.raises(Exception) as exc:
        train(cfg, parent_run_id=parent, overrides=["dataset=mnist"])
    run_id = exc.value.mlflow_run_id
    run = connection.get_client(store).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("failed before its run existed:")
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["config_hash"]
    assert [r.info.run_id for r in sweeps.sweep_children(store, parent)] == [run_id]
    assert records.experiment_runs(store, "emergence")[0].info.run_id == run_id


def test_either_launcher_records_a_job_that_died_before_its_run_existed(store, tiny_overrides):
    """What both launchers do with a job that ended without a result (a worker or SLURM job
    killed): a FAILED run of its cell when it had no run, never a second one, and none when the
    sweep stopped it (it is resumable, not failed)."""
    import dataclasses

    from emergence_lab.run.plan import make_plan
    from emergence_lab.sweep.status import Job, end_job_run

    plan = make_plan(compose_cfg(tiny_overrides), None, [])
    parent = sweeps.open_sweep(store, "emergence", "emergence-y", "hash-y", {"sweep_dir": "y"})
    cell = dataclasses.asdict(dataclasses.replace(plan.cell(plan.tags()), parent_run_id=parent))
    stopped = Job(["a=1"], state="running", cell=cell)
    end_job_run(stopped, killed=True, why="the sweep was stopped (SIGTERM)")
    done = Job(["a=2"], state="failed", cell=cell)  # its process recorded its failure itself
    end_job_run(done, killed=False, why="worker killed by signal 9 (SIGKILL)")
    vanished = Job(["a=5"], state="running", cell=cell)  # a SLURM job no one knows has ended
    end_job_run(vanished, killed=False, why="SLURM job 8 vanished", ended=False)
    assert stopped.run_id is None and done.run_id is None and vanished.run_id is None
    assert sweeps.sweep_children(store, parent) == []
    died = Job(["a=3"], state="running", cell=cell)
    end_job_run(died, killed=False, why="SLURM job 7 ended OUT_OF_MEMORY")
    run = connection.get_client(store).get_run(died.run_id)
    assert (run.info.status, run.data.tags["error"]) == (
        "FAILED", "failed before its run existed: SLURM job 7 ended OUT_OF_MEMORY")
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["config_hash"] == plan.identity
    end_job_run(died, killed=False, why="again")  # it has a run now: that run, ended already
    assert len(sweeps.sweep_children(store, parent)) == 1
    from emergence_lab.sweep.status import SweepStatus

    status = SweepStatus([Job(["a=4"])])  # a job that measures a FINISHED run again, then dies
    status.update(0, {"kind": "start", "name": "n", "epochs": 3, "cell": cell})
    status.update(0, {"kind": "finished_run", "run_id": "a-finished-run"})
    end_job_run(status.jobs[0], killed=False, why="worker killed by signal 9 (SIGKILL)")
    assert status.jobs[0].run_id is None and len(sweeps.sweep_children(store, parent)) == 1


def test_a_table_of_a_million_rows_is_refused_up_front(tmp_path):
    import time

    path = tmp_path / "big.csv"
    row = "r{},0,magnitude,0.5,5,{},0.9,0.88,0.3,1000,500000\n"
    with path.open("w") as f:
        f.write("run_id,seed,strategy,amount,prune_epoch,epoch,train_acc,test_acc,train_loss,E,"
                "params\n")
        f.writelines(row.format(i // 20, i % 20 + 1) for i in range(1_000_000))
    start = time.monotonic()
    proc = subprocess.run([*REPORT, "--from-table", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "1,000,000 rows" in proc.stderr and "50,000" in proc.stderr
    assert time.monotonic() - start < 30 and not (tmp_path / "out").exists()
    # the same rows gzipped, or with CR line endings (pandas reads both), and a stream
    # with no end: each refused as quickly, not read for minutes into gigabytes
    import gzip

    (tmp_path / "big.csv.gz").write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    (tmp_path / "cr.csv").write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    for table, said in (("big.csv.gz", "1,000,000 rows"), ("cr.csv", "1,000,000 rows"),
                        ("/dev/zero", "not a regular file")):
        start = time.monotonic()
        proc = subprocess.run([*REPORT, "--from-table", str(tmp_path / table), "--out",
                               str(tmp_path / "out")], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert proc.returncode == 2 and said in proc.stderr, (table, proc.stderr[-2000:])
        assert time.monotonic() - start < 30 and not (tmp_path / "out").exists()


def test_another_projects_experiments_are_left_alone(tmp_path, store):
    """Runs another project logged to the same store (one tagged kind=sweep, as a sweep of
    theirs might be) are neither taken for a sweep nor reported on."""
    client = connection.get_client(store)
    exp = client.create_experiment("their-project")
    for tags in ({"kind": "sweep"}, {"model": "theirs"}):
        client.set_terminated(client.create_run(exp, tags=tags).info.run_id)
    assert sweeps.latest_sweep(store) is None
    proc = subprocess.run([*REPORT, "--tracking-uri", store], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "no sweep in" in proc.stderr and "migrate" not in proc.stderr
    proc = subprocess.run([*REPORT, "--tracking-uri", store, "--experiment", "their-project"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "another project's experiment, left alone" in proc.stderr
    assert "migrate" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_sweep_says_when_its_finished_cells_were_trained_by_other_code(tmp_path, store):
    """Finished cells of another commit are reused, and the sweep says so in one line."""
    from emergence_lab.config.code_version import git_commit

    sweep = [*TRAIN, "-m", "dataset=digits", "model.hidden=[16,8]", "trainer.epochs=1",
             "pruning=magnitude", "pruning.amount=0,0.5", "pruning.epoch=0",
             "tracking.progress=false", f"tracking.uri={store}"]
    first = subprocess.run(sweep, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run(sweep, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "other code" not in again.stderr  # the same code: nothing to say
    (run, *_) = records.experiment_runs(store, "emergence")
    records.set_run_tags(store, run.info.run_id, {"git_commit": "0123456789abcdef",
                                                  "git_state": "dirty:feedbeef0000"})
    third = subprocess.run(sweep, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-2000:]
    (line,) = [x for x in third.stderr.splitlines() if "other code" in x]
    assert "1 of the 2 finished cells" in line and "0123456789 dirty:feedbeef0000" in line
    assert git_commit()[:10] in line and "force=true retrains them" in line
    # the report: each run's code version in runs.csv, and the mix named in report.md
    import pandas as pd

    from emergence_lab.report.build import build_report

    out = build_report(store, out=str(tmp_path / "report"), log_back=False)
    commits = pd.read_csv(out / "runs.csv").set_index("run_id")["commit"]
    assert commits[run.info.run_id] == "0123456789ab (dirty:feedbeef0000)"
    assert commits.drop(run.info.run_id).str.startswith(git_commit()[:12]).all()
    assert "made by more than one version of the code" in (out / "report.md").read_text()


@pytest.mark.parametrize("script, args, said", [
    ("report", ["--out", "r"], "nothing was written"),
    ("train", ["-m", "dataset=digits", "trainer.epochs=1"], "nothing was started")])
def test_ctrl_c_while_a_command_loads_its_libraries_is_one_line(tmp_path, store, script, args,
                                                                said):
    """SIGINT while report.py or train.py is still importing (pandas, torch, MLflow, Hydra:
    seconds on a busy machine): one line and exit 130, not a traceback out of an import."""
    import os
    import signal
    import time

    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / f"{script}.py"), *args,
                             f"{'--tracking-uri=' if script == 'report' else 'tracking.uri='}"
                             f"{store}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    maps = f"/proc/{proc.pid}/maps"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:  # numpy loaded: imports under way
        try:
            if "_multiarray_umath" in open(maps).read():
                break
        except OSError:
            pass
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == [f"{script}: interrupted before it began; {said}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no report, no store, no outputs
