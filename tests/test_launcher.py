"""The local launcher's workers start from a fork server that has already imported what a job
needs, with the thread count the launcher gives them."""

import multiprocessing
import os
import sys

import pytest

from emergence_lab.run.worker import PRELOAD, THREAD_VARS, worker_context


def _report(queue):
    queue.put({"modules": [m for m in PRELOAD if m in sys.modules], "pid": os.getpid(),
               "parent": os.getppid(), "threads": [os.environ.get(v) for v in THREAD_VARS]})


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(),
                    reason="no fork server on this platform (workers are spawned)")
def test_a_worker_starts_with_torch_imported_and_its_share_of_the_cores():
    before = {v: os.environ.get(v) for v in THREAD_VARS}
    ctx = worker_context(threads=1)
    assert ctx.get_start_method() == "forkserver"
    queue = ctx.Queue()
    procs = [ctx.Process(target=_report, args=(queue,)) for _ in range(2)]
    for p in procs:
        p.start()
    seen = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    for s in seen:
        assert set(PRELOAD) - {"__main__"} <= set(s["modules"]), s  # imported once, in the server
        assert s["threads"] == ["1"] * len(THREAD_VARS)
        assert s["parent"] != os.getpid()  # forked by the server, not from this process
    assert {s["parent"] for s in seen} == {seen[0]["parent"]}
    assert {v: os.environ.get(v) for v in THREAD_VARS} == before  # this process's own untouched


def test_a_config_error_is_reported_without_importing_mlflow(tmp_path):
    """A bad config fails before anything touches a store, so the command line does not pay
    for importing MLflow (about a third of its CPU time) to say so."""
    import subprocess

    from tests.conftest import ROOT

    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "scripts" / "train.py"), "-m",
         "dataset=digits", "trainer.lr=0", "tracking.uri=sqlite:///x.db"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "trainer.lr must be > 0" in proc.stderr, proc.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]
    assert "torch" in imported  # the check itself is real: imports are listed
    assert not [m for m in imported if m.split(".")[0] == "mlflow"]


def test_a_stop_signal_during_a_store_call_is_raised_when_the_call_returns():
    """Raised inside SQLAlchemy, KeyboardInterrupt could leave a pooled connection holding
    SQLite's lock; a stop that comes during a store call surfaces right after it instead."""
    import signal

    from emergence_lab import procs

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    procs.stop_requested.clear()
    procs.stop_on_signals()
    finished = []
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            with procs.store_call():
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs between these bytecodes
                    sum(range(100))
                finished.append(True)
        assert finished == [True]  # the call ran to its end
        with procs.store_call():  # later calls are not interrupted again
            pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        procs.stop_requested.clear()
