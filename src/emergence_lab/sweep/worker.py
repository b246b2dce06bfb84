"""A worker process of the sweep's local launcher (`sweep/launcher.py`): it runs the jobs the
launcher sends, one at a time, as Hydra's joblib launcher runs them (`run_job` on the job's
composed config), with the job's output in its log file and its progress sent back."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from emergence_lab import procs
from emergence_lab.run import events
from emergence_lab.run.plan import hand

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


# What every worker imports: started once in the fork server, so that a worker starts in a
# fraction of a second instead of importing torch, MLflow and Hydra again (seconds of CPU each).
# torch._dynamo: the optimizer's first step imports it. No CUDA is initialised by importing.
# The server alone imports forkserver_exit: it exits without the interpreter's teardown.
PRELOAD = ["__main__", "torch", "torch._dynamo", "emergence_lab.run.pipeline",
           "emergence_lab.sweep.forkserver_exit"]


def thread_share(workers: int) -> int:
    """The threads each of `workers` processes sharing this machine's cores takes (as joblib's
    loky workers share them)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def worker_context(threads: int) -> multiprocessing.context.BaseContext:
    """Workers are forked from a fork server that has imported PRELOAD (never from this
    process, which holds threads and store connections); spawned where there is none. The
    server gets the workers' thread counts (BLAS pools size themselves when loaded)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    saved = {var: os.environ.get(var) for var in THREAD_VARS}
    os.environ.update({var: str(threads) for var in THREAD_VARS})
    try:
        forkserver.ensure_running()
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    return ctx


def pool_size(n_jobs: int) -> int:
    """The workers hydra.launcher.n_jobs asks for (-1: one per CPU)."""
    return n_jobs if n_jobs > 0 else os.cpu_count() or 1


def worker_threads(n_jobs: int, jobs: int) -> int:
    """Each worker's threads, for `jobs` jobs on n_jobs workers (-1: one per CPU)."""
    return thread_share(min(pool_size(n_jobs), jobs))


def start_server(launcher_config: Any, jobs: int) -> None:
    """For a sweep of `jobs` jobs on a launcher whose workers fork from this fork server (its
    config says `fork_server: true`, as hydra/launcher=local's does): start it now, while the
    sweep's checks and its store's set-up go on in this process, so that its imports (seconds)
    no longer hold up the first job. Other launchers: nothing."""
    if launcher_config.get("fork_server", False) and jobs:
        worker_context(worker_threads(int(launcher_config.get("n_jobs", 1)), jobs))


def stop_server() -> None:
    """Stop this process's fork server, if it started one (a sweep that ends before any job,
    on a bad cell or with every cell finished): mid-import, it would go on for seconds holding
    this process's output open."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None:
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(Exception):  # reaps it and forgets it (its pid, socket, pipe)
        server._stop()


def _send(conn: Connection, msg: tuple[Any, ...]) -> None:
    conn.send_bytes(pickle.dumps(msg))


def worker_main(conn: Connection) -> None:
    """Receive the sweep's setup, then jobs (index, overrides) until None or a signal. The
    first SIGINT/SIGTERM interrupts the job (its run ends KILLED) and ends the worker; a second
    one, such as Ctrl-C reaching both the worker and, forwarded, its launcher, is ignored."""
    procs.stop_on_signals()
    # tqdm would make a multiprocessing lock, whose semaphore a killed worker leaks (a warning
    # at the launcher's exit); the bars of one process need only a thread lock
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    try:
        threads = pickle.loads(conn.recv_bytes())
        # n_jobs workers share the machine's cores (as joblib's loky workers do); a job computing
        # a shared prefix may still borrow the threads of siblings waiting for it (checkpoint.py)
        for var in THREAD_VARS:
            os.environ[var] = str(threads)
        import torch

        torch.set_num_threads(threads)
        setup = pickle.loads(conn.recv_bytes())
        events.set_sink(lambda event: _send(conn, ("event", event)))
        while (msg := pickle.loads(conn.recv_bytes())) is not None:
            try:
                ret = _run(setup, *msg)
            except KeyboardInterrupt:
                _send(conn, ("interrupted",))
                return  # a stopped worker takes no more jobs
            _send(conn, ("done", *_result(ret)))
    except (EOFError, OSError, KeyboardInterrupt):  # the launcher has gone, or stops us idle
        return


def _run(setup: dict[str, Any], idx: int, overrides: list[str], plan: Any = None) -> Any:
    """One job: its config composed here (as joblib's execute_job does: what its JobReturn
    carries), run by run_job with the plan the sweep made for it (run.plan.hand)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    setup_globals()
    Singleton.set_state(setup["singleton_state"])
    hydra_context, num = setup["hydra_context"], setup["initial_job_idx"] + idx
    config = hydra_context.config_loader.load_sweep_config(setup["config"], list(overrides))
    with open_dict(config):
        config.hydra.job.id = f"{config.hydra.job.name}_{num}"
        config.hydra.job.num = num
        root = config.hydra.job_logging.get("root") if config.hydra.job_logging else None
        if root is not None and {"console", "file"} <= set(root.get("handlers") or []):
            root.handlers = [h for h in root.handlers if h != "console"]  # the file has it all
    HydraConfig.instance().set_config(config)
    log = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir) / \
        f"{config.hydra.job.name}.log"
    events.emit("log", path=str(log))  # the launcher shows a failing cell's last lines
    hand(plan)
    try:
        with _output_to(log):
            return run_job(hydra_context=hydra_context, config=config,
                           task_function=setup["task_function"], job_dir_key="hydra.sweep.dir",
                           job_subdir_key="hydra.sweep.subdir")
    finally:
        hand(None)


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """This process's stdout and stderr (Python's and C's) appended to `path` meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = [os.dup(1), os.dup(2)]
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for target, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, target)
            os.close(copy)


def _result(ret: Any) -> tuple[bool, Any, dict[str, Any]]:
    """(whether the job completed, its return value or its exception, the rest of its
    JobReturn): the job's config and Hydra config as YAML (their nodes may be typed by classes
    only this process's plugin scan imported), its working dir and task name, so that the
    launcher's JobReturn carries what Hydra's launchers return."""
    from hydra.core.utils import JobStatus
    from omegaconf import OmegaConf

    value = ret._return_value
    try:
        pickle.dumps(value)
    except Exception:
        value = RuntimeError(f"{type(value).__name__}: {value}")
    rest = {"cfg": OmegaConf.to_yaml(ret.cfg) if ret.cfg is not None else None,
            "hydra_cfg": OmegaConf.to_yaml(ret.hydra_cfg) if ret.hydra_cfg is not None else None,
            "working_dir": ret.working_dir, "task_name": ret.task_name}
    return ret.status == JobStatus.COMPLETED, value, rest
