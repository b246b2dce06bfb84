"""Serving a store to others: MLflow's basic-auth app for `make server` and `make ui`.

A server that another machine reaches (a cluster's nodes, colleagues) lets in only who logs in:
MLflow's own authentication (`mlflow server --app-name basic-auth`). Its admin account's name
and password come from MLflow's environment variables (MLFLOW_AUTH_ADMIN_USERNAME,
MLFLOW_AUTH_ADMIN_PASSWORD) or, the first time, from a password generated into a file of mode
600; they never appear on a command line or in the repository. Clients (a sweep, its jobs on a
cluster, the report, a browser) log in with MLflow's MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from pathlib import Path

AUTH_APP = "basic-auth"
ADMIN = "admin"


def is_loopback(host: str) -> bool:
    """Whether a server bound to `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: what it resolves to
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback
                       for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def auth_env(folder: Path, default_permission: str = "READ") -> tuple[dict[str, str], str]:
    """The environment that runs MLflow's basic-auth app with its user database in `folder`
    (made mode 700), and a line telling clients how to log in. The admin password is
    MLFLOW_AUTH_ADMIN_PASSWORD where set, else the one in folder/admin.password (generated
    at the first start, mode 600); MLflow uses it only to create the admin account."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    user = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or ADMIN
    secret = folder / "admin.password"
    password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") or _secret(secret)
    ini = folder / "basic_auth.ini"
    ini.write_text("[mlflow]\n"
                   f"default_permission = {default_permission}\n"
                   f"database_uri = sqlite:///{(folder / 'basic_auth.db').resolve()}\n"
                   f"admin_username = {user}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": user,
           "MLFLOW_AUTH_ADMIN_PASSWORD": password,
           # the key of the login forms' CSRF tokens: the same across restarts and workers
           "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
           or _secret(folder / "flask.secret")}
    where = "MLFLOW_AUTH_ADMIN_PASSWORD" if os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") \
        else f"$(cat {secret})"
    hint = (f"log in as {user} (the password: {where}); clients set "
            f"MLFLOW_TRACKING_USERNAME={user} MLFLOW_TRACKING_PASSWORD={where}")
    return env, hint


def _secret(path: Path) -> str:
    """The secret kept in `path`, made (mode 600, never readable by others) the first time."""
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18))
    return path.read_text().strip()


def open_warning(host: str) -> str:
    """The warning for a server without authentication on an address others reach."""
    return (f"warning: {host} is reachable from other machines and the server runs without "
            f"authentication: anyone who reaches it reads and writes every run. Leave AUTH "
            f"unset (MLflow's basic-auth app) or bind HOST=127.0.0.1")


def allowed_hosts() -> str:
    """MLflow's --allowed-hosts for a server the cluster's nodes reach by this machine's name:
    MLflow's defaults (loopback, private addresses) and this machine's names."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    names = {socket.gethostname(), socket.getfqdn()}
    return ",".join([*get_default_allowed_hosts(), *sorted(names),
                     *sorted(f"{n}:*" for n in names)])


def served(host: str, auth: str, auth_dir: Path, who: str) -> tuple[list[str], dict[str, str]]:
    """The arguments and environment `mlflow server`/`mlflow ui` run with on `host`: MLflow's
    basic-auth where `auth` is on, or auto and others reach the address (a warning where they
    reach it without one), and this machine's names admitted off loopback. `who` prefixes the
    lines it prints (make server, make ui)."""
    import sys

    public = not is_loopback(host)
    args, env = (["--allowed-hosts", allowed_hosts()] if public else []), dict(os.environ)
    if auth == "on" or (auth == "auto" and public):
        extra, hint = auth_env(auth_dir)
        env.update(extra)
        print(f"{who}: MLflow's basic-auth: {hint}", file=sys.stderr, flush=True)
        return [*args, "--app-name", AUTH_APP], env
    if public:
        print(f"{who}: {open_warning(host)}", file=sys.stderr, flush=True)
    return args, env
