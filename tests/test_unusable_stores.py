"""A store the tool cannot use is one line and exit code 2, within seconds, in every mode (a
sweep, a single run, the report, the UI): real closed ports, a file that is not a database,
an SQLite file with broken pages, an unknown scheme; a full disk named by its path."""

import errno
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from emergence_lab.errors import one_line
from tests.conftest import ROOT, free_port

MODES = {
    "sweep": ["scripts/train.py", "-m", "dataset=digits", "trainer.epochs=1"],
    "single run": ["scripts/train.py", "dataset=digits", "trainer.epochs=1"],
    "report": ["scripts/report.py"],
    "ui": ["scripts/ui.py", "--print-only"],
}


def broken_sqlite(path):
    """A real store with garbage written over some of its pages."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [("y" * 500,)] * 200)
    with open(path, "r+b") as f:
        f.seek(4096 * 3)
        f.write(b"\xff" * 3000)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("stores")
    (d / "garbage.db").write_bytes(bytes(range(256)) * 400)
    broken_sqlite(d / "broken.db")
    return d, {
        "http server not listening": (f"http://127.0.0.1:{free_port()}", "cannot be reached"),
        "postgresql on a closed port": (f"postgresql://u:p@127.0.0.1:{free_port()}/db",
                                        "the database server 127.0.0.1"),
        "unknown scheme": ("foo://bar", "unknown scheme 'foo'"),
        "not a database": (f"sqlite:///{d / 'garbage.db'}", "is not a usable SQLite database "
                                                              "(file is not a database)"),
        "broken pages": (f"sqlite:///{d / 'broken.db'}", "is not a usable SQLite database"),
    }


# every mode for a server that does not answer and a corrupt file; the sweep for the others
CASES = [(store, mode) for store in ("http server not listening", "broken pages") for mode in MODES] \
    + [(store, "sweep") for store in ("postgresql on a closed port", "unknown scheme", "not a database")]


@pytest.fixture(scope="module")
def outcomes(stores):
    workdir, uris = stores

    def run(case):
        store, mode = case
        uri = uris[store][0]
        arg = ["--tracking-uri", uri] if mode in ("report", "ui") else [f"tracking.uri={uri}"]
        started = time.monotonic()
        proc = subprocess.run([sys.executable, str(ROOT / MODES[mode][0]), *MODES[mode][1:], *arg],
                              cwd=workdir, capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stderr + proc.stdout, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(CASES, pool.map(run, CASES), strict=True))


@pytest.mark.slow
@pytest.mark.timing
@pytest.mark.parametrize("store,mode", CASES, ids=[f"{s}, {m}" for s, m in CASES])
def test_a_store_that_cannot_be_used_is_one_line_and_exit_2_in_seconds(stores, outcomes, store, mode):
    code, output, seconds = outcomes[store, mode]
    message = stores[1][store][1]
    ours = [line for line in output.splitlines() if " INFO " not in line and line.strip()]
    assert code == 2, output[-2000:]
    assert len(ours) <= 2 and message in ours[0], output[-2000:]  # a sweep may name its job
    assert "Traceback" not in output
    assert seconds < 15, f"{seconds:.1f} s"


def test_a_full_sqlite_store_is_named_in_one_line(tmp_path):
    """SQLite's own "database or disk is full" (a page limit makes it real), and ENOSPC."""
    path = tmp_path / "full.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA max_page_count = 8")
    with pytest.raises(sqlite3.OperationalError) as err:
        db.execute("CREATE TABLE t (x TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [("y" * 4000,)] * 100)
    line = one_line(err.value, f"sqlite:///{path}")
    assert line.startswith(f"the disk holding sqlite:///{path} is full") and "\n" not in line
    with pytest.raises(OSError) as err, open("/dev/full", "w") as f:
        f.write("x")
        f.flush()
    assert err.value.errno == errno.ENOSPC
    assert one_line(err.value, "sqlite:///s.db").startswith("no space left on the device holding")


@pytest.mark.slow
def test_a_store_on_a_full_disk_is_refused_before_anything_runs(tmp_path):
    """A real small file system (tmpfs) as the store's disk: the sweep says which folder's disk
    is full and writes nothing there."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"this machine does not let the tests mount a tmpfs: {mounted.stderr.strip()}")
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *MODES["sweep"][1:],
                               f"tracking.uri=sqlite:///{disk / 'x.db'}"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"Sweep not started: the disk holding the store {disk} is full" in proc.stderr
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)
