"""`make ui` lands on the sweep: the URL scripts/ui.py prints, rendered by a real headless
Chromium against the real `mlflow ui` it then serves, shows the sweep's verdicts and runs."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from emergence_lab.config.identity import user_name
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
    from filelock import FileLock

    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with FileLock("/tmp/emergence-lab-apt.lock"):  # one installer at a time (parallel tests)
        if shutil.which("chromium"):
            return shutil.which("chromium")
        subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=600, capture_output=True)
        got = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env,
                             timeout=900, capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"apt-get could not install chromium: {got.stderr.strip()[-300:]}")
    return shutil.which("chromium")


def open_page(browser: str):
    """A page of headless Chromium driven by Playwright (a fresh profile: a first visit)."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    chrome = pw.chromium.launch(executable_path=browser, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync",
        "--disable-component-update", "--no-first-run"])
    page = chrome.new_page(viewport={"width": 1400, "height": 1000})
    return page, lambda: (chrome.close(), pw.stop())


def sweep_store(store: str) -> tuple[str, list[str]]:
    parent = sweeps.start_sweep(store, "paper_fmnist", "paper_fmnist-ui-test", {})
    names = []
    for seed in (0, 1, 2):
        for level, e_end in ((0.0, 60), (0.5, 30)):
            name = f"mnist-mlp-magnitude{level:g}-seed{seed}"
            curves = branch([0.1, 0.5, 0.6, 0.7 - level / 10, 0.8 - level / 10 - seed / 100],
                            [100, 90, 80, 70 - level * 40, e_end + seed], [0.1] * 5, pe=2)
            write_run(store, parent, name, params(level, seed), curves, experiment="paper_fmnist")
            names.append(name)
    return parent, names


def train_two(store: str, tmp_path) -> tuple[list[str], str]:
    """Two real (tiny) training runs in the sweep's experiment, seeds 0 and 1: (run ids,
    experiment id)."""
    from emergence_lab.run import pipeline
    from emergence_lab.store import connection
    from tests.conftest import compose_cfg

    for seed in (0, 1):
        pipeline.train(compose_cfg([
            "dataset=digits", "model.hidden=[16,8]", "trainer.epochs=2", "trainer.lr=0.05",
            f"trainer.seed={seed}", f"tracking.uri={store}", "tracking.experiment=paper_fmnist",
            "tracking.progress=false", f"tracking.cache_dir={tmp_path / 'cache'}"]))
    client = connection.get_client(store)
    exp = client.get_experiment_by_name("paper_fmnist")
    runs = [r.info.run_id for r in client.search_runs([exp.experiment_id])
            if r.info.run_name.startswith("digits")]
    return runs, exp.experiment_id


def test_the_url_make_ui_prints_opens_on_the_verdicts_and_the_report_renders(store, tmp_path):
    """What a person sees: the parent's page (the URL make ui prints) in the machine-learning
    layout shows the verdict table and the child runs without a click; the report's HTML page
    renders its figures."""
    from playwright.sync_api import expect

    browser = chromium()
    parent, names = sweep_store(store)
    out = build_report(store, sweep=parent, out=str(tmp_path / "report"))  # writes the parent's note
    trained, exp_id = train_two(store, tmp_path)
    port = free_port()
    ui = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "ui.py"), "--tracking-uri", store,
                           "--port", str(port), "--artifact-root", str(tmp_path / "artifacts")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    page, close = open_page(browser)
    try:
        lines = [ui.stdout.readline() for _ in range(4)]  # printed once the server answers
        assert "paper_fmnist-ui-test" in lines[0] and "MLflow UI ready" in lines[3], lines
        url = lines[2].split()[-1]  # "  its parent: URL"
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/") and parent in url
        page.goto(url)
        shown = lambda locator: expect(locator).to_be_visible(timeout=60_000)  # noqa: E731
        shown(page.get_by_role("cell", name="costs_accuracy").first)  # rendered, not folded away
        shown(page.get_by_role("columnheader", name="verdict").first)
        for name in names:  # the child runs, each a link
            shown(page.get_by_role("link", name=name))
        shown(page.get_by_role("link", name="report.html").first)
        assert page.get_by_text("Evaluation runs").count() == 0  # not the generative-AI layout
        # every headline verdict on the page, without a click: an effect per claim in the
        # metrics table, the verdict beside it as a tag
        shown(page.get_by_role("link", name="claim/costs_accuracy/magnitude/50pct"))
        shown(page.get_by_text("claim/lowers_E").first)
        shown(page.get_by_text("verdict/costs_accuracy").first)
        compare = page.get_by_role("link", name="Compare emergence/E and test/acc across the runs")
        shown(compare)
        href = compare.get_attribute("href")
        assert href.startswith("/#/metric?")  # relative: the UI's own host and port
        page.goto(f"http://127.0.0.1:{port}{href}")  # the UI opens it in a new tab
        shown(page.get_by_text("emergence/E vs test/acc").first)  # one curve a run, over epochs
        shown(page.get_by_text(names[0]).first)
        # a real training run's page: its data set, who ran it and from what source
        page.goto(f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs/{trained[0]}"
                  "?workflowType=machine_learning")
        shown(page.get_by_text("digits (", exact=False).first)  # Datasets: digits (<digest>)
        shown(page.get_by_text(user_name()).first)  # Created by
        shown(page.get_by_text("Training").first)  # the dataset's context
        # Compare, differences only: the hyperparameter that differs, no bookkeeping
        page.goto(f"http://127.0.0.1:{port}/#/compare-runs?runs={json.dumps(trained)}"
                  f"&experiments={json.dumps([exp_id])}")
        row = lambda name: page.locator("th", has_text=name)  # noqa: E731 - a param's row
        shown(row("dataset.data_dir").first)
        page.get_by_text("Show diff only").first.click()  # the parameters' switch
        shown(row("trainer.seed").first)
        expect(row("dataset.data_dir")).to_have_count(0)
        expect(row(re.compile(r"^lease\."))).to_have_count(0)
        page.goto((out / "report.html").resolve().as_uri())
        images = page.locator("img")
        assert images.count() >= 2
        widths = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        assert all(w > 100 for w in widths), widths  # every figure decoded and drawn
        shown(page.get_by_text("Verdicts").first)
    finally:
        close()
        ui.terminate()
        ui.wait(30)


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
