"""What can go wrong after the up-front check never damages finished results or counts a
measurement twice: duplicates in reports, broken caches, and a report asked for bad things."""

import importlib.util
import logging
import sys

import pandas as pd
import pytest

from emergence_lab.report.build import build_report
from emergence_lab.report.synthetic import branch, params, write_run
from emergence_lab.run import pipeline
from emergence_lab.store import connection, records, sweeps
from tests.conftest import ROOT, compose_cfg

BRANCHES = ["pruning=magnitude", "pruning.epoch=1", "trainer.epochs=2"]


def test_runs_of_one_cell_are_one_measurement_in_both_report_modes(tiny_overrides, store, tmp_path):
    parent = sweeps.start_sweep(store, "emergence", "s", {})
    ids = {}
    for force in ("false", "true"):  # a sweep, then the same with force=true
        for amount in ("0", "0.5"):
            pipeline.train(compose_cfg(tiny_overrides + BRANCHES + [
                f"pruning.amount={amount}", f"force={force}"]), parent_run_id=parent)
    for r in records.experiment_runs(store, "emergence"):
        ids.setdefault(r.data.tags["config_hash"], []).append(r.info.run_id)  # oldest first
    assert sorted(len(v) for v in ids.values()) == [2, 2]
    for mode in ({"sweep": parent}, {"experiment": "emergence"}):
        out = build_report(store, out=str(tmp_path / next(iter(mode))), log_back=False, **mode)
        summary = (out / "summary.csv").read_text().splitlines()
        assert len(summary) == 3  # control and 50 %
        text = (out / "report.md").read_text()
        assert "n = 2" not in text and "| 2 |" not in text  # never two "seeds" from one cell
        assert text.count("the same measurement, not counted") == 2
        for old, new in ids.values():
            assert f"kept run {new} (FINISHED" in text and f"{old} (FINISHED)" in text


def test_a_corrupt_prefix_cache_is_moved_aside_and_recomputed(tiny_overrides, store, tmp_path,
                                                              caplog):
    pipeline.train(compose_cfg(tiny_overrides + BRANCHES + ["pruning.amount=0"]))
    (cache,) = (tmp_path / "cache").glob("*.pt")
    cache.write_bytes(cache.read_bytes()[:100])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING):
        out = pipeline.train(compose_cfg(tiny_overrides + BRANCHES + ["pruning.amount=0.5"]))
    assert out["test/acc"] > 0
    assert f"prefix cache {cache} is not trusted: its sha256" in caplog.text  # its digest
    assert list((tmp_path / "cache").glob(f"{cache.name}.untrusted-*"))
    runs = {r.info.run_name: r for r in records.experiment_runs(store, "emergence")}
    pruned = runs["digits-mlp-magnitude0.5-bs32-seed0"]
    assert pruned.info.status == "FINISHED" and pruned.data.tags["prefix_cache"] == "miss"


def test_a_folder_where_the_prefix_cache_goes_is_moved_aside(tiny_overrides, store, tmp_path,
                                                            caplog):
    """Not a failure of every cell that shares the prefix, forever, with a temporary file left
    behind at each try: the folder is moved aside, named, and the prefix computed again."""
    pipeline.train(compose_cfg(tiny_overrides + BRANCHES + ["pruning.amount=0"]))
    (cache,) = (tmp_path / "cache").glob("*.pt")
    cache.unlink()
    cache.mkdir()
    with caplog.at_level(logging.WARNING):
        out = pipeline.train(compose_cfg(tiny_overrides + BRANCHES + ["pruning.amount=0.5"]))
    assert out["test/acc"] > 0 and cache.is_file()
    assert f"prefix cache {cache} is not a file; moved to {cache.name}.untrusted-" in caplog.text
    assert [p.is_dir() for p in (tmp_path / "cache").glob(f"{cache.name}.untrusted-*")] == [True]
    assert not list((tmp_path / "cache").glob(f".{cache.name}.*"))  # no temporary file left


def test_an_edited_prefix_cache_is_not_trusted(tiny_overrides, store, tmp_path, caplog):
    """A well-formed cache whose history was edited (test/acc 0.988 where the truth is lower)
    is not logged as a run's own epochs: its digest is not the one the store recorded when it
    was written, so it is moved aside, named, and computed again."""
    import torch

    pipeline.train(compose_cfg(tiny_overrides + BRANCHES + ["pruning.amount=0"]))
    (cache,) = (tmp_path / "cache").glob("*.pt")
    payload = torch.load(cache, weights_only=True)
    truth = {epoch: m["test/acc"] for epoch, m in payload["history"]}
    for _, metrics in payload["history"]:
        metrics["test/acc"] = 0.988
    torch.save(payload, cache)
    with caplog.at_level(logging.WARNING):
        pipeline.train(compose_cfg(tiny_overrides + BRANCHES + ["pruning.amount=0.5"]))
    assert f"prefix cache {cache} is not trusted: its sha256" in caplog.text
    assert list((tmp_path / "cache").glob(f"{cache.name}.untrusted-*"))
    runs = {r.info.run_name: r for r in records.experiment_runs(store, "emergence")}
    pruned = runs["digits-mlp-magnitude0.5-bs32-seed0"]
    assert pruned.data.tags["prefix_cache"] == "miss"
    logged = dict(records.metric_history(store, pruned.info.run_id, "test/acc"))
    assert {e: logged[e] for e in truth} == truth and 0.988 not in logged.values()
    caplog.clear()
    (cache,) = (tmp_path / "cache").glob("*.pt")  # the one computed again: recorded, trusted
    with caplog.at_level(logging.WARNING):
        pipeline.train(compose_cfg(tiny_overrides + BRANCHES + ["pruning.amount=0.7"]))
    assert "not trusted" not in caplog.text


def test_a_runs_stored_files_are_checked_against_the_digests_it_recorded(store, tmp_path, caplog):
    """RunFiles records each file as stored, in tags of the run (a new tag per owner and past
    MLflow's 8,000 characters); check_run_files names the run, the file and what differs, and
    reads files stored before digests were recorded with a warning."""
    from types import SimpleNamespace

    from emergence_lab.store import digests

    run_id = records.create_owned_run(store, "emergence", "r", {}, None, "me")
    files = tmp_path / "files"
    files.mkdir()
    first = digests.RunFiles(store, run_id, "measurements", "c1 clean")
    for i in range(120):  # about 80 characters each: two tags
        (files / f"epoch_{i:04d}.pt").write_bytes(str(i).encode())
        first.record(files / f"epoch_{i:04d}.pt")
    (files / "epoch_0003.pt").write_bytes(b"3 again")  # a resumed owner stores one again
    digests.RunFiles(store, run_id, "measurements", "c2 dirty:0123").record(files / "epoch_0003.pt")
    tags = connection.get_client(store).get_run(run_id).data.tags
    chunks = sorted(k for k in tags if k.startswith("digest.measurements."))
    assert chunks == ["digest.measurements.1", "digest.measurements.2", "digest.measurements.3"]
    assert all(len(tags[k]) <= 8000 for k in chunks)
    held = digests.recorded(tags, "measurements")
    assert len(held) == 120 and held["epoch_0003.pt"][1] == "c2 dirty:0123"
    run = SimpleNamespace(info=SimpleNamespace(run_id=run_id), data=SimpleNamespace(tags=tags))
    names = sorted(p.name for p in files.iterdir())
    digests.check_run_files(run, "measurements", files, names)  # all as stored
    (files / "epoch_0007.pt").write_bytes(b"8")
    with pytest.raises(ValueError, match=f"run {run_id}: measurements/epoch_0007.pt is not the "
                                         f"file it stored: its sha256 .* recorded when code c1 "
                                         f"clean stored it"):
        digests.check_run_files(run, "measurements", files, names)
    (files / "epoch_0999.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="epoch_0999.pt is not the file it stored: no digest"):
        digests.check_run_files(run, "measurements", files, ["epoch_0999.pt"])
    old = SimpleNamespace(info=run.info, data=SimpleNamespace(tags={}))
    with caplog.at_level(logging.WARNING):
        digests.check_run_files(old, "measurements", files, names)
    assert f"run {run_id} stored its measurements before runs recorded their digests" in caplog.text


def test_edited_kept_weights_fail_a_landscape_only_cell(tiny_overrides, store, tmp_path):
    """The weights a run keeps for its landscape are read back by a landscape-only sweep: one
    that is not the file stored fails the cell naming it (tag measure_error), nothing logged."""
    import torch

    from emergence_lab.measure import keys

    pipeline.train(compose_cfg(tiny_overrides))  # landscape=none keeps the weights
    (run,) = records.experiment_runs(store, "emergence")
    (weights,) = tmp_path.rglob(f"{run.info.run_id}/**/weights_epoch_0003.pt")
    state = torch.load(weights, weights_only=True)
    state["model"] = {k: v * 0 for k, v in state["model"].items()}
    torch.save(state, weights)
    with pytest.raises(ValueError, match="landscape/weights_epoch_0003.pt is not the file it "
                                         "stored"):
        pipeline.train(compose_cfg(tiny_overrides + ["landscape=curvature"]))
    again = connection.get_client(store).get_run(run.info.run_id)
    assert "landscape/weights_epoch_0003.pt" in again.data.tags[keys.MEASURE_ERROR_TAG]
    assert not [k for k in again.data.metrics if k.startswith("landscape/")]


def test_a_refused_checkpoint_fails_its_run_naming_file_and_run(tiny_overrides, store, tmp_path):
    pipeline.train(compose_cfg(tiny_overrides))
    (run,) = records.experiment_runs(store, "emergence")
    client = connection.get_client(store)
    client.set_terminated(run.info.run_id, "KILLED")  # as if interrupted
    tampered = tmp_path / "last.pt"
    tampered.write_bytes(b"\x80\x04\x95" + b"cos\nsystem\n(S'echo pwned'\ntR." * 2)
    client.log_artifact(run.info.run_id, str(tampered), "checkpoints")
    with pytest.raises(ValueError, match=f"checkpoints/last.pt of run {run.info.run_id} is "
                                         r"refused by torch.load\(weights_only=True\)"):
        pipeline.train(compose_cfg(tiny_overrides))
    got = client.get_run(run.info.run_id)
    assert got.info.status == "FAILED" and "is refused" in got.data.tags["error"]


def test_a_step_logged_twice_by_an_old_store_counts_once(store, tmp_path):
    parent = sweeps.start_sweep(store, "synthetic", "s", {})
    curves = branch([0.1, 0.5, 0.6], [100, 90, 80], [0.1, 0.09, 0.08], pe=1)
    write_run(store, parent, "c", params(0.0, 0, pe=1), curves)
    rid = write_run(store, parent, "p", params(0.5, 0, pe=1), curves)
    connection.get_client(store).log_metric(rid, "test/acc", 0.7, step=2)  # a second value at step 2
    out = build_report(store, sweep=parent, out=str(tmp_path / "r"), log_back=False)
    assert (out / "report.md").is_file()


def report_main():
    """scripts/report.py's main, run in this process (the command line without its start-up)."""
    spec = importlib.util.spec_from_file_location("report_script", ROOT / "scripts" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_a_report_asked_for_bad_things_says_so_in_one_line_and_writes_nothing(
        store, tmp_path, monkeypatch, capsys):
    parent = sweeps.start_sweep(store, "synthetic", "all-failed", {})
    curves = branch([0.1, 0.5], [100, 90], [0.1, 0.09], pe=1)
    child = write_run(store, parent, "c", params(0.0, 0, pe=1), curves, status="FAILED")
    (tmp_path / "afile").write_text("")
    cases = {
        "all cells failed": (["--sweep", parent], "no FINISHED runs in all-failed"),
        "unknown sweep": (["--sweep", "0" * 32], f"--sweep {'0' * 32}: no such run in"),
        "a child run": (["--sweep", child], f"it is a run of sweep {parent}: use --sweep {parent}"),
        "unwritable --out": (["--sweep", parent, "--out", str(tmp_path / "afile" / "r")],
                             "cannot be written"),
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    main = report_main()
    monkeypatch.chdir(tmp_path)
    for case, (args, message) in cases.items():
        monkeypatch.setattr(sys, "argv", ["report.py", "--tracking-uri", store, *args])
        code = main()
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if " INFO mlflow" not in line]  # logging
        assert code == 2, (case, err[-2000:])
        assert len(lines) == 1 and message in lines[0], (case, err[-2000:])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no reports/ folder
    reports = [r for r in connection.get_client(store).search_runs(
        [connection.ensure_experiment(store, "synthetic")]) if r.data.tags.get("kind") == "report"]
    assert reports == []


def test_a_collapsed_run_is_tagged_warned_and_left_out_of_the_claims(tiny_overrides, store,
                                                                     tmp_path, caplog):
    """trainer.lr=10 kills every unit and leaves chance accuracy: the run says so, and the
    report lists it apart instead of treating it as data."""
    parent = sweeps.start_sweep(store, "emergence", "collapse", {})
    with caplog.at_level(logging.WARNING):
        for lr, seed in (("10", "0"), ("0.05", "0"), ("0.05", "1")):
            pipeline.train(compose_cfg(tiny_overrides + [f"trainer.lr={lr}",
                                                         f"trainer.seed={seed}"]),
                           parent_run_id=parent)
    every = records.experiment_runs(store, "emergence")
    runs = {f"{float(r.data.params['trainer.lr']):g}": r for r in every}  # one of the lr 0.05
    assert "at or below chance" in runs["10"].data.tags["collapsed"]
    assert "collapsed" not in runs["0.05"].data.tags
    assert "collapsed:" in caplog.text
    out = build_report(store, sweep=parent, out=str(tmp_path / "r"), log_back=False)
    text = (out / "report.md").read_text()
    assert "### Collapsed runs" in text and runs["10"].info.run_name in text.split("### Collapsed")[1]
    assert sorted(pd.read_csv(out / "epochs.csv").run_id.unique()) == sorted(
        r.info.run_id for r in every if r is not runs["10"])  # the claims' data, without it
    counted = build_report(store, sweep=parent, out=str(tmp_path / "all"), log_back=False,
                           include_collapsed=True)
    assert runs["10"].info.run_id in set(pd.read_csv(counted / "epochs.csv").run_id)


def test_a_save_that_fails_leaves_no_temporary_file(tmp_path):
    from emergence_lab.files import atomic_save

    target = tmp_path / "x.pt"
    target.mkdir()  # the rename into place fails
    with pytest.raises(IsADirectoryError):
        atomic_save({"a": 1}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


@pytest.mark.slow
def test_a_cache_moved_aside_is_said_on_the_sweeps_console(tmp_path):
    """Not only in the job's log: the sweep's own output names the cache file and where it went."""
    import subprocess

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "dataset=digits",
             "model.hidden=[16,8]", "trainer.epochs=2", "pruning=magnitude", "pruning.epoch=1",
             "tracking.progress=false", f"tracking.uri={store}",
             f"tracking.cache_dir={tmp_path / 'cache'}"]
    first = subprocess.run([*sweep, "pruning.amount=0"], capture_output=True, text=True,
                           timeout=300, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (cache,) = (tmp_path / "cache").glob("*.pt")
    cache.write_bytes(cache.read_bytes()[:100])
    again = subprocess.run([*sweep, "pruning.amount=0.5"], capture_output=True, text=True,
                           timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"prefix cache {cache} is not trusted" in again.stderr, again.stderr[-2000:]
    assert f"moved to {cache.name}.untrusted-" in again.stderr
