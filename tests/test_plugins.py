"""Extending is adding: a pruning strategy and an activity rule from outside src/ (a plugin
module and YAMLs on Hydra's search path) run a real two-cell sweep; nothing in src/ changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from emergence_lab.store import records, sweeps
from tests.conftest import ROOT

PLUGIN = '''
"""A plugin: Taylor-score pruning |w * g| (Molchanov et al. 2017) and an activity rule on |output|."""
from dataclasses import dataclass

from emergence_lab.measure.rules import RULES, RuleEntry
from emergence_lab.prune.base import STRATEGIES, PruningConfig, StrategyEntry, target_weights
from emergence_lab.prune.masks import keep_top


@dataclass
class TaylorConfig(PruningConfig):
    samples: int = 64


def taylor(model, p, rate, masks, batch):
    if __import__("os").environ.get("TAYLOR_BROKEN"):
        raise RuntimeError("taylor is broken in this run")
    weights = target_weights(model, p)
    loss = batch.loss(model(batch.x), batch.y)
    grads = __import__("torch").autograd.grad(loss, list(weights.values()))
    scores = {k: (w * g).detach().abs() for (k, w), g in zip(weights.items(), grads)}
    return keep_top(scores, masks, rate, p.scope)


STRATEGIES.add(StrategyEntry("taylor", taylor, TaylorConfig, "Taylor", batch_field="samples"))
RULES.add(RuleEntry("mean_abs", lambda stats, theta, min_fraction: stats.mean_abs > theta,
                    "mean |output| > θ"))
'''

PRUNING_YAML = """
defaults:
  - /schema/pruning/taylor@_here_
  - _self_

name: taylor
amount: 0.5
epoch: 1
samples: 32
"""

THRESHOLD_YAML = """
defaults:
  - /schema/threshold/base@_here_
  - _self_

rule: mean_abs
theta: 0.05
"""


def src_state() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "src", "conf"],
                          cwd=ROOT, capture_output=True, text=True).stdout


@pytest.mark.slow
def test_a_strategy_and_a_rule_from_outside_src_run_a_sweep(tmp_path):
    before = src_state()
    plugin = tmp_path / "plugin"
    (plugin / "conf" / "pruning").mkdir(parents=True)
    (plugin / "conf" / "threshold").mkdir(parents=True)
    (plugin / "my_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (plugin / "conf" / "pruning" / "taylor.yaml").write_text(PRUNING_YAML)
    (plugin / "conf" / "threshold" / "abs.yaml").write_text(THRESHOLD_YAML)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "EMERGENCE_LAB_PLUGINS": "my_plugin",
           "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "dataset=digits",
           "pruning=taylor", "threshold=abs", "pruning.amount=0,0.5", "model.hidden=[32,16]",
           "trainer.epochs=2", "trainer.device=cpu", "tracking.progress=false",
           f"tracking.uri={store}", f"tracking.cache_dir={tmp_path / 'cache'}",
           f"hydra.searchpath=[file://{plugin / 'conf'}]", f"hydra.sweep.dir={tmp_path / 'sweep'}",
           "hydra.launcher.n_jobs=1"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = {r.data.params["pruning.amount"]: r for r in records.experiment_runs(store, "emergence")}
    assert sorted(runs) == ["0.0", "0.5"]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert runs["0.5"].data.params["pruning.name"] == "taylor"
    assert runs["0.5"].data.metrics["pruning/sparsity"] == pytest.approx(0.5, abs=0.01)
    assert runs["0.0"].data.metrics["pruning/sparsity"] == 0
    # the plugin's rule is the run's analysis setting: its E series is logged beside the paper's
    assert any("mean_abs" in k for k in runs["0.5"].data.metrics), sorted(runs["0.5"].data.metrics)
    assert src_state() == before  # nothing in src/ or conf/ was touched
    # the same sweep forced, with the strategy failing: the cell's older FINISHED run does not
    # hide its forced run's failure: the sweep fails and lists the cell, and its launch is
    # recorded with one failed cell (the parent stays FINISHED: each cell has a finished run)
    out = subprocess.run(cmd + ["force=true"], cwd=tmp_path, env={**env, "TAYLOR_BROKEN": "1"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "1 of 2 cells did not finish" in out.stderr and "taylor is broken" in out.stderr
    assert "Redo with:" in out.stderr
    launch = json.loads(sweeps.latest_sweep(store).data.tags[sweeps.LAUNCH_TAG])
    assert (launch["cells"], launch["trained"], launch["failed"]) == (2, 1, 1), launch


def test_a_plugin_that_cannot_be_imported_is_one_clear_error(monkeypatch):
    from emergence_lab.registry import PLUGINS_ENV, load_plugins

    monkeypatch.setenv(PLUGINS_ENV, "no_such_plugin_module")
    with pytest.raises(ValueError, match="plugin module 'no_such_plugin_module' cannot be imported"):
        load_plugins()


def test_a_strategy_whose_batch_field_is_not_a_setting_fails_when_it_registers():
    from emergence_lab.prune.base import PruningConfig, StrategyEntry

    with pytest.raises(ValueError, match=r"batch_field='sample' is not a field of PruningConfig"):
        StrategyEntry("typo", lambda *a: a[3], PruningConfig, batch_field="sample")


def test_a_batch_size_that_is_not_a_positive_integer_fails_when_validated():
    """Checked for every strategy with a batch_field, even one whose settings do not check it."""
    from dataclasses import dataclass

    from emergence_lab.prune.base import PruningConfig, StrategyEntry

    @dataclass
    class Unchecked(PruningConfig):
        batch: int = 8

    entry = StrategyEntry("unchecked", lambda *a: a[3], Unchecked, batch_field="batch")
    entry.check_settings(Unchecked())
    with pytest.raises(ValueError, match=r"pruning.batch .* must be an integer >= 1, got 0"):
        entry.check_settings(Unchecked(batch=0))
