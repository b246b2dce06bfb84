"""Bad input fails before any run starts, with a message that names it, and the store is left
as it was. Each case runs scripts/train.py against a store that already holds a run: the
single-run cases as plain command lines, the sweep cases each in its own process forked after
the script's imports (tests/fixtures/forked_cli.py)."""

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from emergence_lab.measure.counting import COUNTINGS
from emergence_lab.measure.rules import RULES
from emergence_lab.store import records
from tests.conftest import ROOT, SHARED_MNIST, corrupt_mnist_copy

pytestmark = pytest.mark.slow

BASE = ["-m", "dataset=digits", "trainer.epochs=1", "model.hidden=[8,8]"]

CASES = {
    "unknown option": (["pruning=lotery"],
                       r"Could not find 'pruning/lotery'"),
    "unknown option lists the valid ones": (["model=resnet"], "Available options"),
    "typo in a key": (["trainer.learning_rate=0.1"], "Could not override 'trainer.learning_rate'"),
    "amount out of range": (["pruning=magnitude", "pruning.epoch=0", "pruning.amount=0,1.5"],
                            "pruning.amount must be in [0, 1), got 1.5"),
    "prune after the last epoch": (["pruning=magnitude", "pruning.epoch=3"],
                                   "pruning.epoch must be < trainer.epochs (1), got 3"),
    "prune at the last epoch": (["pruning=magnitude", "pruning.epoch=1"],
                                "pruning.epoch must be < trainer.epochs (1), got 1"),
    "a device this machine lacks": (["trainer.device=cuda"], "trainer.device=cuda: this machine"),
    "no parallel jobs": (["hydra.launcher.n_jobs=0"], "hydra.launcher.n_jobs=0: the number of"),
    "pretraining on data of another shape": (
        ["pretrain=mnist"], "pretrain.dataset=mnist has inputs (1, 28, 28) and 10 classes, "
        "dataset=digits has (1, 8, 8)"),
    "infinite init scale": (["init=emergence", "init.alpha=inf"], "init.alpha must be finite"),
    "init scale that overflows": (["init=emergence", "init.alpha=1e39"],
                                  "init.alpha=1e+39 (init=emergence) makes the initial weights "
                                  "non-finite"),
    "the old file store": (["tracking.uri=file:///tmp/mlruns"], "MLflow 3.13+ refuses the file"),
    "a directory as the store": (["tracking.uri=sqlite:///adir"], "adir is a directory"),
    "a store that cannot be written": (["tracking.uri=sqlite:////proc/emergence-lab/x.db"],
                                       "the store /proc/emergence-lab/x.db cannot be written"),
    "negative threshold": (["threshold.theta=-1"],
                           "threshold.theta (θ of rule mean) must be a finite number >= 0, got -1.0"),
    "NaN tau": (["threshold=dormant", "threshold.theta=nan"],
                "threshold.theta (τ of rule dormant) must be a finite number >= 0, got nan"),
    "unknown activity rule": (["threshold.rule=median"],
                              f"threshold.rule must be one of {sorted(RULES.names())}, "
                              "got 'median'"),
    "unknown route counting": (["threshold.counting=paths"],
                               f"threshold.counting must be one of {sorted(COUNTINGS.names())}, got 'paths'"),
    "a layer pattern that matches nothing": (["pruning=magnitude", "pruning.epoch=0",
                                              "pruning.ignore=[fc.weight]"],
                                             "pruning.ignore: 'fc.weight' matches no prunable"),
    "zero learning rate": (["trainer.lr=0"], "trainer.lr must be > 0, got 0.0"),
    "zero width": (["model.hidden=[0,4]"], "model.hidden widths must be > 0, got [0, 4]"),
    "unknown device": (["trainer.device=tpu"], "trainer.device must be one of auto, cpu"),
    "experiment that does not exist": (["experiment=paper_svhn"],
                                       "Could not find 'experiment/paper_svhn'"),
    "tracking server that cannot be reached": (["tracking.uri=http://127.0.0.1:9"],
                                               "tracking.uri=http://127.0.0.1:9 cannot be reached"),
    "data that is missing": (["dataset=mnist", "dataset.sources=[]", "dataset.download=false",
                              "dataset.data_dir=empty"], "Ways to get them"),
    "data that is corrupt": (["dataset=mnist", "dataset.sources=[]", "dataset.download=false",
                              "dataset.data_dir=corrupt"], "t10k-labels-idx1-ubyte is corrupt"),
    "an experiment name that leaves the store": (
        ["tracking.experiment=../../../../tmp/x"],
        "tracking.experiment='../../../../tmp/x' must be one folder name inside the store"),
    "an experiment name too long for a folder": (
        ["tracking.experiment=" + "x" * 300], "tracking.experiment is 300 bytes long; a folder"),
    "a nested _target_ that would write a file": (
        ["model=custom", "model._target_=torch.nn.Identity", "+model.kwargs.f._target_=builtins.open",
         "+model.kwargs.f.file=PWNED", "+model.kwargs.f.mode=w"],
        "model.kwargs.f._target_: a _target_ is allowed only as model._target_"),
    "a model class that is a function": (["model=custom", "model._target_=shutil.copyfile"],
                                         "model._target_=shutil.copyfile is a function, not an "
                                         "nn.Module class"),
    "an infinite learning rate": (["trainer.lr=inf"], "trainer.lr must be a finite number, got inf"),
    "an unknown store scheme": (["tracking.uri=foo://bar"], "unknown scheme 'foo'"),
    "a seed that is not a number": (["trainer.seed=0,abc"],
                                    "Value 'abc' of type 'str' could not be converted to Integer"),
}
# The same one-line errors without -m (a single run), for the cases that are ours to word.
SINGLE_RUN = ["an infinite learning rate", "a directory as the store",
              "tracking server that cannot be reached", "an experiment name that leaves the store",
              "a nested _target_ that would write a file"]


def digest(path):
    """The store's bytes, with those of its write-ahead log (empty once checkpointed)."""
    wal = path.with_name(path.name + "-wal")
    return hashlib.md5(path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")).hexdigest()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with a store that holds one run, and a corrupt copy of MNIST."""
    d = tmp_path_factory.mktemp("bad")
    uri = f"sqlite:///{d / 'x.db'}"
    with records.Run(uri, "emergence", "existing", {}) as run:
        run.log_metrics({"test/acc": 0.5}, step=0)
    with sqlite3.connect(d / "x.db") as db:  # all of it in x.db: any later write shows
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (d / "adir").mkdir()
    if SHARED_MNIST.is_dir():
        corrupt_mnist_copy(d / "corrupt")
    return d


def case_args(case, mode):
    """The command line's arguments for one case."""
    base = [a for a in BASE if a != "-m" or mode == "sweep"]
    if any(o.startswith("model=") for o in CASES[case][0]):  # another model: not the MLP's widths
        base = [a for a in base if not a.startswith("model.hidden")]
    return [*base, "tracking.uri=sqlite:///x.db", *CASES[case][0]]


def run_case(workdir, case, mode):
    """(return code, output, seconds) of `python scripts/train.py` with one case's overrides."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *case_args(case, mode)], cwd=workdir,
        capture_output=True, text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    return proc.returncode, proc.stderr + proc.stdout, time.monotonic() - started


def forked_cases(workdir, outdir, runs):
    """The same for many cases, each run as scripts/train.py's own process forked after its
    imports (tests/fixtures/forked_cli.py): the interpreter's start and torch's import, most of
    a failing command line's CPU, are paid once."""
    jobs = [{"args": case_args(case, mode), "cwd": str(workdir), "env": {"HYDRA_FULL_ERROR": "0"},
             "out": str(outdir / f"{i}.txt")} for i, (case, mode) in enumerate(runs)]
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fixtures" / "forked_cli.py"),
                           str(ROOT / "scripts" / "train.py"), "3"], input=json.dumps(jobs),
                          capture_output=True, text=True, timeout=600, cwd=outdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [(r["code"], Path(j["out"]).read_text(), r["seconds"])
            for r, j in zip(json.loads(proc.stdout), jobs, strict=True)]


RUNS = [(c, "sweep") for c in CASES] + [(c, "single run") for c in SINGLE_RUN]


@pytest.fixture(scope="module")
def results(workdir, tmp_path_factory):
    """Every case's outcome and the store's digest before and after all of them. The sweep
    cases run forked three at a time (each is mostly start-up); the single-run ones as plain
    command lines, meanwhile."""
    before = digest(workdir / "x.db")
    sweep = [r for r in RUNS if r[1] == "sweep"]
    single = [r for r in RUNS if r[1] != "sweep"]
    with ThreadPoolExecutor(max_workers=1) as pool:
        plain = pool.map(lambda r: run_case(workdir, *r), single)
        outcomes = dict(zip(sweep, forked_cases(workdir, tmp_path_factory.mktemp("out"), sweep),
                            strict=True))
        outcomes.update(zip(single, plain, strict=True))
    return outcomes, before, digest(workdir / "x.db")


@pytest.mark.parametrize("case,mode", RUNS, ids=[f"{c} ({m})" for c, m in RUNS])
def test_bad_input_fails_before_any_run_and_leaves_the_store_alone(workdir, results, case, mode):
    message = CASES[case][1]
    if "corrupt" in case and not SHARED_MNIST.is_dir():
        pytest.skip("../shared/datasets/mnist absent")
    if "device" in case and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    outcomes, before, after = results
    code, output, seconds = outcomes[case, mode]
    assert code != 0
    assert message in output, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    assert seconds < 60  # no minutes of retries against a broken store
    assert after == before  # not a byte written: no run, no parent
    assert not (workdir / "mlruns").exists()
    assert not (workdir / "PWNED").exists()  # no code ran from the config
    if mode == "single run" or message.startswith("tracking.uri"):
        line = next(x for x in output.splitlines() if message in x)
        assert line.startswith(("error: ", "Sweep not started: ")), line  # one line of ours
        assert code == 2


def test_unknown_options_list_only_real_options(workdir, results):
    """Hydra lists a group's choices; the schemas the options extend are not among them."""
    output = results[0]["unknown option lists the valid ones", "sweep"][1]
    choices = output.split("Available options in 'model':")[1].split("Config search path")[0].split()
    assert "mlp" in choices and "resnet20" in choices
    assert not [c for c in choices if c.startswith("base") or "schema" in c], choices
