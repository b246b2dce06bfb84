"""Bring an older store up to today's layout, in place and idempotently (scripts/migrate_store.py).

The run pipeline reads only today's layout; what older code wrote is rewritten here once:

- `config_hash`: a run stored while the whole threshold group was part of a cell's identity
  carries the hash of that scheme (`identity.legacy_hash`) where it differs from today's. Its
  config (config.yaml) is rebuilt, and a run whose tag is that old hash is re-tagged with
  today's, the old one kept as `config_hash_legacy`. A tag that is neither is left alone.
- the ledger: a cell whose unfinished (RUNNING or KILLED) runs predate the ledger, and so have
  no `owner` tag and no `cell.<hash>.<n>` entry, gets an entry naming its newest such run, so
  that the next sweep resumes it rather than starting another.
- each migrated experiment is tagged `emergence_lab.store_version` (STORE_VERSION); a report
  on an experiment without it says, in one line, to run the migration.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from omegaconf import OmegaConf

from emergence_lab.config.groups import PretrainConfig, ThresholdConfig, TrackingConfig, TrainerConfig
from emergence_lab.config.identity import config_hash, legacy_hash
from emergence_lab.config.schema import Config
from emergence_lab.data import DATASETS
from emergence_lab.models import INITS, MODELS
from emergence_lab.prune.base import STRATEGIES
from emergence_lab.store import artifacts, connection, ledger, records
from emergence_lab.store.connection import STORE_VERSION, STORE_VERSION_TAG

log = logging.getLogger(__name__)
RENAMED = {("threshold", "mode"): "rule"}  # fields renamed since: (group, old) -> new


@dataclass(frozen=True)
class Change:
    """One rewrite: what, on which run or cell, from and to."""

    experiment: str
    kind: str  # config_hash, ledger, version
    target: str  # a run id, a cell, an experiment
    old: str
    new: str

    def line(self) -> str:
        return f"{self.experiment}: {self.kind} of {self.target}: {self.old or '-'} -> {self.new}"


def _settings(cls: type, values: dict[str, Any] | None, group: str) -> Any:
    """A settings dataclass from stored values: fields it no longer has are dropped (renamed ones
    moved), fields it has since gained take their defaults (which keep the old behaviour)."""
    values = dict(values or {})
    for (g, old), new in RENAMED.items():
        if g == group and old in values:
            values.setdefault(new, values.pop(old))
    known = {f.name for f in dataclasses.fields(cls)}
    node = OmegaConf.merge(OmegaConf.structured(cls), {k: v for k, v in values.items() if k in known})
    return OmegaConf.to_object(node)


def config_from_stored(d: dict[str, Any]) -> Config:
    """The typed config of a stored run, from its config.yaml (raises ValueError if it no longer
    validates)."""
    pre = d.get("pretrain") or {}
    pre_data = pre.get("dataset")
    return Config(
        model=_settings(MODELS[d["model"]["name"]].settings, d["model"], "model"),
        dataset=_settings(DATASETS[d["dataset"]["name"]].settings, d["dataset"], "dataset"),
        pruning=_settings(STRATEGIES[d["pruning"]["name"]].settings, d["pruning"], "pruning"),
        threshold=_settings(ThresholdConfig, d.get("threshold"), "threshold"),
        trainer=_settings(TrainerConfig, d.get("trainer"), "trainer"),
        tracking=_settings(TrackingConfig, d.get("tracking"), "tracking"),
        init=_settings(INITS[(d.get("init") or {}).get("name", "standard")].settings, d.get("init"), "init"),
        pretrain=PretrainConfig(pre.get("epochs", 0), None if not pre_data else _settings(
            DATASETS[pre_data["name"]].settings, pre_data, "dataset")))


def _stored_config(uri: str, run: Any) -> dict[str, Any] | None:
    text = artifacts.load_text(uri, run.info.run_id, "config.yaml")
    return yaml.safe_load(text) if text else None


def _hash_changes(uri: str, experiment: str, runs: list[Any]) -> Iterator[Change]:
    for run in runs:
        tag = run.data.tags.get("config_hash")
        stored = _stored_config(uri, run) if tag else None
        if stored is None:
            continue
        try:
            c = config_from_stored(stored)
        except (ValueError, KeyError) as exc:
            log.warning("%s: run %s's config no longer validates (%s); left as it is", experiment,
                        run.info.run_id, exc)
            continue
        now = config_hash(c)
        if tag != now and tag == legacy_hash(c):
            yield Change(experiment, "config_hash", run.info.run_id, tag, now)


def _ledger_changes(uri: str, experiment: str, exp_id: str, runs: list[Any],
                    renamed: dict[str, str]) -> Iterator[Change]:
    cells: dict[str, list[Any]] = {}
    for run in runs:
        h = renamed.get(run.info.run_id, run.data.tags.get("config_hash"))
        if h:
            cells.setdefault(h, []).append(run)
    entered = ledger.entries(uri, exp_id, "cell.")
    for h, members in sorted(cells.items()):
        if any(k.startswith(f"cell.{h}.") for k in entered):
            continue
        if any(r.info.status == "FINISHED" for r in members):
            continue  # a finished cell is found by its hash; nothing to resume
        unowned = [r for r in members if r.info.status in ("RUNNING", "KILLED")
                   and ledger.OWNER_TAG not in r.data.tags]
        if unowned:
            yield Change(experiment, "ledger", f"cell.{h}.1", "", unowned[-1].info.run_id)


def plan_migration(uri: str) -> list[Change]:
    """Every change the store needs, applied or not; empty once it is migrated."""
    client = connection.get_client(uri)
    out: list[Change] = []
    for exp in client.search_experiments():
        if exp.name == ledger.LEDGER_EXPERIMENT or exp.tags.get(STORE_VERSION_TAG) == STORE_VERSION:
            continue
        runs = records.experiment_runs(uri, exp.name)
        if not runs:
            continue  # nothing in it to bring up to date (MLflow's Default, a report's own)
        hashes = list(_hash_changes(uri, exp.name, runs))
        renamed = {ch.target: ch.new for ch in hashes}
        out += hashes + list(_ledger_changes(uri, exp.name, exp.experiment_id, runs, renamed))
        out.append(Change(exp.name, "version", exp.name, exp.tags.get(STORE_VERSION_TAG, ""),
                          STORE_VERSION))
    return out


def apply(uri: str, changes: list[Change]) -> None:
    """Write the changes (each one safe to repeat)."""
    client = connection.get_client(uri)
    for ch in changes:
        if ch.kind == "config_hash":
            records.set_run_tags(uri, ch.target, {"config_hash": ch.new, "config_hash_legacy": ch.old})
        elif ch.kind == "ledger":
            exp_id = client.get_experiment_by_name(ch.experiment).experiment_id
            ledger.set_once(uri, exp_id, ch.target, ch.new)
        else:
            exp_id = client.get_experiment_by_name(ch.experiment).experiment_id
            connection.retry(lambda e=exp_id: client.set_experiment_tag(e, STORE_VERSION_TAG,
                                                                        STORE_VERSION))
