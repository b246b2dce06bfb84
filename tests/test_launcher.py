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
