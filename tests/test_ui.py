"""`make ui` lands on the sweep: the URL scripts/ui.py prints, rendered by a real headless
Chromium against the real `mlflow ui` it then serves, shows the sweep's verdicts and runs."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from emergence_lab.report.build import build_report
from emergence_lab.report.synthetic import branch, params, write_run
from emergence_lab.store import sweeps
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow


def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing; a skip where it cannot be."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is missing and apt-get cannot run here (not root or no apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=600, capture_output=True)
    got = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, timeout=900,
                         capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"apt-get could not install chromium: {got.stderr.strip()[-300:]}")
    return shutil.which("chromium")


def render(browser: str, url: str) -> str:
    """The page's text after its scripts ran (a fresh profile, as a first visit)."""
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                              f"--user-data-dir={profile}", "--virtual-time-budget=20000",
                              "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_the_url_make_ui_prints_shows_the_sweep(store, tmp_path):
    browser = chromium()
    parent = sweeps.start_sweep(store, "paper_fmnist", "paper_fmnist-ui-test", {})
    names = []
    for seed in (0, 1, 2):
        for level, e_end in ((0.0, 60), (0.5, 30)):
            name = f"mnist-mlp-magnitude{level:g}-seed{seed}"
            curves = branch([0.1, 0.5, 0.6, 0.7 - level / 10, 0.8 - level / 10 - seed / 100],
                            [100, 90, 80, 70 - level * 40, e_end + seed], [0.1] * 5, pe=2)
            write_run(store, parent, name, params(level, seed), curves, experiment="paper_fmnist")
            names.append(name)
    build_report(store, sweep=parent, out=str(tmp_path / "report"))  # writes the parent's note
    port = free_port()
    ui = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "ui.py"), "--tracking-uri", store,
                           "--port", str(port), "--artifact-root", str(tmp_path / "artifacts")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        lines = [ui.stdout.readline() for _ in range(3)]
        assert "paper_fmnist-ui-test" in lines[0], lines
        url = lines[2].split()[-1]  # "  its parent: URL"
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/") and parent in url
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                assert time.time() < deadline and ui.poll() is None, "mlflow ui did not start"
                time.sleep(1)
        page = render(browser, url)
    finally:
        ui.terminate()
        ui.wait(30)
    assert "paper_fmnist-ui-test" in page
    missing = [n for n in names if n not in page]
    assert not missing, f"run names not on the page: {missing}; page: {page[:2000]}"
    assert "costs_accuracy" in page and "report.html" in page  # the note: verdicts, report link


def test_make_ui_on_a_taken_port_is_one_line_and_exit_2(store):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "ui.py"), "--tracking-uri",
                               store, "--port", str(port)], capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"make ui: port {port} on 127.0.0.1 is taken (another server?); choose another: "
        f"make ui PORT={port + 1}"]
    assert proc.stdout == ""  # no URL printed for a server that is not there
