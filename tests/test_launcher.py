"""The local launcher's workers start from a fork server that has already imported what a job
needs, with the thread count the launcher gives them."""

import multiprocessing
import os
import sys

import pytest

from emergence_lab.sweep.worker import PRELOAD, THREAD_VARS, worker_context


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


def _python(code, cwd=None):
    import subprocess

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


TEARDOWN = """
import atexit, sys, threading, time
class Late:
    def __del__(self):
        print("teardown", flush=True)
kept = Late()  # freed only by the interpreter's teardown
atexit.register(lambda: print("atexit", flush=True))
"""


def test_a_command_line_ends_with_its_code_its_exit_handlers_and_no_teardown():
    """procs.run_and_exit (scripts/*.py): what the interpreter's exit does that a caller can
    see (threads waited for, atexit handlers, flushed output, the exit code), less the teardown
    that costs a torch-holding process seconds."""
    code = TEARDOWN + """
from emergence_lab import procs
def main():
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread", end=" "))).start()
    print("out", end=" ")  # left in the buffer
    return 3
procs.run_and_exit(main)
"""
    proc = _python(code)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.split() == ["out", "thread", "atexit"]  # and no "teardown"
    for raised, rc, err in (("SystemExit(4)", 4, ""), ("SystemExit('no such store')", 1, "no such store"),
                            ("SystemExit(None)", 0, "")):
        proc = _python(TEARDOWN + f"from emergence_lab import procs\n"
                                  f"def main():\n    raise {raised}\nprocs.run_and_exit(main)\n")
        assert (proc.returncode, proc.stdout.split(), proc.stderr.strip()) == (rc, ["atexit"], err)
    proc = _python(TEARDOWN + "print('plain')")  # the check can fail: a plain exit tears down
    assert proc.stdout.split() == ["plain", "atexit", "teardown"]


def test_the_fork_server_leaves_without_the_interpreters_teardown():
    """Imported in the server only (PRELOAD's last): its exit, once the launcher is gone, skips
    the teardown that kept a caller reading the launcher's output waiting."""
    assert PRELOAD[-1] == "emergence_lab.sweep.forkserver_exit"
    proc = _python(TEARDOWN + "import emergence_lab.sweep.forkserver_exit\nraise SystemExit")
    assert (proc.returncode, proc.stdout.split()) == (0, [])  # not even the earlier handlers


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(),
                    reason="no fork server on this platform (workers are spawned)")
def test_the_fork_server_starts_early_for_this_launcher_only_and_can_be_stopped():
    """The sweep callback starts the local launcher's fork server before its own checks (its
    imports overlap them), and stops it when no job will run (every cell finished, a bad cell)."""
    code = """
import os
from multiprocessing import forkserver
from omegaconf import OmegaConf
from hydra_plugins.emergence_lab_launcher.config import ProcessLauncherConf
from emergence_lab.sweep.worker import start_server, stop_server
def server():
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    try:
        return pid is not None and os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False
start_server(OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher"
                                           ".JoblibLauncher", "n_jobs": 2}), 4)
print(server())
start_server(OmegaConf.structured(ProcessLauncherConf(n_jobs=2)), 4)
print(server())
pid = forkserver._forkserver._forkserver_pid
stop_server()
print(server())
stop_server()  # again: nothing left to stop
print(os.path.exists(f"/proc/{pid}"))
"""
    proc = _python(code)
    assert proc.stdout.split() == ["False", "True", "False", "False"], proc.stderr[-2000:]
