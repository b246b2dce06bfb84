"""A real MLflow tracking server on loopback, on SQLite and on PostgreSQL: a sweep logs to it
over HTTP, and the runs and the report read back through MLflow."""

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from emergence_lab.report.build import build_report
from emergence_lab.store import connection, sweeps
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """The server's backend store: SQLite, or a real PostgreSQL on loopback (Debian's)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'srv.db'}"
        return
    pgdata = tempfile.mkdtemp(prefix="emergence-lab-pg-", dir="/tmp")  # reachable by postgres
    script = str(ROOT / "scripts" / "postgres.sh")
    port = str(free_port())
    uri = subprocess.run([script, "start", pgdata, port], capture_output=True, text=True,
                         timeout=600, check=True).stdout.strip()
    yield uri
    subprocess.run([script, "stop", pgdata], timeout=120)
    shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture
def server(backend, tmp_path):
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", backend,
         "--artifacts-destination", str(tmp_path / "srv-artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start in 120 s")
    yield uri, tmp_path
    proc.terminate()
    proc.wait(timeout=30)


def test_sweep_against_a_tracking_server(server, tmp_path):
    uri, srv_dir = server
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "dataset=digits",
         "pruning=magnitude", "pruning.amount=0,0.5", "pruning.epoch=1", "trainer.epochs=2",
         "model.hidden=[32,16]", f"tracking.uri={uri}"],
        cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent = sweeps.latest_sweep(uri)
    children = sweeps.sweep_children(uri, parent.info.run_id)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children)
    client = connection.get_client(uri)
    ck = {a.path for a in client.list_artifacts(children[0].info.run_id, "checkpoints")}
    assert ck == {"checkpoints/last.pt", "checkpoints/best.pt"}
    assert any((srv_dir / "srv-artifacts").rglob("last.pt"))  # stored by the server
    out = build_report(uri, out=str(tmp_path / "report"))
    assert (out / "report.html").is_file()


def test_the_postgresql_store_lets_no_one_in_without_the_password_and_mlflow_is_no_superuser(
        tmp_path):
    """scripts/postgres.sh: scram-sha-256 on TCP, the password from a file libpq reads (never a
    command line), the role `mlflow` owning only its database."""
    import os

    import psycopg

    pgdata = tempfile.mkdtemp(prefix="emergence-lab-pg-", dir="/tmp")
    script = str(ROOT / "scripts" / "postgres.sh")
    port = str(free_port())
    try:
        uri = subprocess.run([script, "start", pgdata, port], capture_output=True, text=True,
                             timeout=600, check=True).stdout.strip()
        assert uri == f"postgresql://mlflow@127.0.0.1:{port}/mlflow"  # no password in it
        conninfo = f"host=127.0.0.1 port={port} dbname=mlflow user=mlflow"
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(conninfo, passfile=os.devnull, connect_timeout=10).close()
        with psycopg.connect(conninfo, connect_timeout=10) as conn:  # ~/.pgpass has it
            row = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                               "WHERE rolname = 'mlflow'").fetchone()
            assert row == (False, False, False)
            owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE "
                                 "datname = 'mlflow'").fetchone()
            assert owner == ("mlflow",)
        # a password that is SQL, and holds what .pgpass escapes: it is only ever a password
        hostile = "x'; ALTER ROLE mlflow SUPERUSER; --:\\pw"
        subprocess.run([script, "stop", pgdata], timeout=120, check=True)
        env = {**os.environ, "EMERGENCE_LAB_PG_PASSWORD": hostile,
               "PGPASSFILE": str(tmp_path / "pgpass")}
        subprocess.run([script, "start", pgdata, port], capture_output=True, text=True,
                       timeout=600, check=True, env=env)
        for login in ({"password": hostile}, {"passfile": str(tmp_path / "pgpass")}):
            with psycopg.connect(conninfo, connect_timeout=10, **login) as conn:
                row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'mlflow'")
                assert row.fetchone() == (False,)
    finally:
        subprocess.run([script, "stop", pgdata], timeout=120)
        shutil.rmtree(pgdata, ignore_errors=True)
