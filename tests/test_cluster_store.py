"""What a sweep on a cluster may share: a SQLite store on a network file system is refused
for jobs on other nodes; a server that others reach logs them in."""

from __future__ import annotations

import pytest

from emergence_lab.errors import one_line
from emergence_lab.store import network_fs, serving

MOUNTS = """\
overlay / overlay rw,relatime 0 0
proc /proc proc rw 0 0
server:/export/home /home nfs4 rw,relatime,vers=4.2 0 0
server:/export/home/alice/runs /scratch/runs nfs4 rw,bind 0 0
/dev/sda1 /home/alice/local ext4 rw 0 0
lustre@tcp:/fs /lustre lustre rw 0 0
/dev/sdb1 /mnt/my\\040disk ext4 rw 0 0
"""


@pytest.mark.parametrize("path, refused", [
    ("/home/alice/project/mlruns/mlflow.db", "nfs4"),  # the usual submit folder
    ("/scratch/runs/mlruns/mlflow.db", "nfs4"),  # a bind mount of a network path
    ("/lustre/project/mlflow.db", "lustre"),
    ("/home/alice/local/mlruns/mlflow.db", None),  # a local disk mounted inside the NFS home
    ("/tmp/mlruns/mlflow.db", None),
    ("/mnt/my disk/mlflow.db", None),
])
def test_a_sqlite_store_on_a_network_file_system_is_refused(path, refused):
    uri = f"sqlite:///{path}"
    if refused is None:
        network_fs.check_shared_store(uri, MOUNTS)
        return
    with pytest.raises(ValueError) as exc:
        network_fs.check_shared_store(uri, MOUNTS)
    assert refused in str(exc.value) and "make server" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_server_store_is_never_refused():
    network_fs.check_shared_store("http://login01:5000", MOUNTS)
    network_fs.check_shared_store("postgresql://mlflow@db/mlflow", MOUNTS)


def test_this_machines_own_mounts_are_read():
    assert network_fs.filesystem_of(network_fs.Path("/")) is not None


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False),
                                            ("192.168.1.5", False)])
def test_which_addresses_others_reach(host, loopback):
    assert serving.is_loopback(host) is loopback


def test_the_admin_password_is_kept_private_and_never_in_the_config(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    env, hint = serving.auth_env(tmp_path / "auth")
    secret = tmp_path / "auth" / "admin.password"
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == secret.read_text()
    assert secret.read_text() not in (tmp_path / "auth" / "basic_auth.ini").read_text()
    assert secret.read_text() not in hint
    again, _ = serving.auth_env(tmp_path / "auth")  # the same password at the next start
    assert again["MLFLOW_AUTH_ADMIN_PASSWORD"] == env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert again["MLFLOW_FLASK_SERVER_SECRET_KEY"] == env["MLFLOW_FLASK_SERVER_SECRET_KEY"]


def test_a_refused_login_reads_as_one_line(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    exc = RuntimeError("API request to endpoint /api/2.0/mlflow/experiments/get-by-name failed "
                       "with error code 401 != 200. Response body: 'You are not authenticated.'")
    line = one_line(exc, "http://h:5000")
    assert "MLFLOW_TRACKING_USERNAME" in line and "http://h:5000" in line and "refused" not in line
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    assert "were refused" in one_line(exc, "http://h:5000")


def test_make_ui_on_an_address_others_reach_asks_for_a_login(tmp_path, monkeypatch, capsys):
    """make ui's and make server's MLflow on 0.0.0.0 run MLflow's basic-auth app (whose logins
    tests/test_slurm.py exercises on a real server); on loopback they do not."""
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    command, env = serving.served("0.0.0.0", "auto", tmp_path / "auth", "make ui")
    assert command[-2:] == ["--app-name", "basic-auth"] and "--allowed-hosts" in command
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == (tmp_path / "auth" / "admin.password").read_text()
    assert "make ui: MLflow's basic-auth" in capsys.readouterr().err
    assert serving.served("127.0.0.1", "auto", tmp_path / "x", "make ui")[0] == []
    command, _ = serving.served("0.0.0.0", "off", tmp_path / "x", "make server")
    assert "--app-name" not in command and "without authentication" in capsys.readouterr().err
