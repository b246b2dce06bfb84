"""One run end to end: own the cell, build the network, train it with pruning steps on the
configured schedule, measure emergence every epoch and log to MLflow.

Runs that share their training before the first pruning step share it through
`checkpoint.shared_prefix` (computed once, cached, its threads lent by waiting siblings); every
branch still logs its whole curve from step 0. The plan is `run/plan.py`'s, which process trains
a cell `store/cells.py`'s, the stages `run/stages.py`'s and the loop `run/loop.py`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from emergence_lab import procs
from emergence_lab.config import Config
from emergence_lab.config.code_version import code_diff
from emergence_lab.config.identity import flatten
from emergence_lab.data import TensorData, load_dataset
from emergence_lab.errors import one_line
from emergence_lab.measure import keys
from emergence_lab.measure.baselines import chance_accuracy, collapse
from emergence_lab.measure.counting import COUNTINGS
from emergence_lab.measure.graph import forget_unit_graphs
from emergence_lab.run import callbacks as cb
from emergence_lab.run import events, landscape, remeasure
from emergence_lab.run.execution import prepare
from emergence_lab.run.plan import RunPlan, make_plan
from emergence_lab.run.preflight import build_network, preflight
from emergence_lab.run.stages import Setup, _train_branch
from emergence_lab.store import cells as ownership
from emergence_lab.store import connection, records
from emergence_lab.store.models import log_pytorch_model
from emergence_lab.store.system import system_metrics

log = logging.getLogger(__name__)


def _remeasure(c: Config, run: Any, name: str, data: TensorData) -> None:
    """A finished cell: add the configured analysis setting's series from its stored
    measurements, and the landscape's from its kept weights (no training)."""
    t = c.threshold.setting()
    wanted = [t.with_counting(k) for k in COUNTINGS.names()]
    lacking = [s.describe() for s in wanted if keys.setting_keys(s)[0] not in run.data.metrics]
    try:
        _relandscape(c, run, name, data)
        done = remeasure.add_settings(c.tracking.uri, run, wanted)
    except ValueError as exc:  # stored files missing, unreadable or not the ones stored: said
        records.set_run_tags(c.tracking.uri, run.info.run_id, {keys.MEASURE_ERROR_TAG: str(exc)[:4000]})
        exc.mlflow_run_id = run.info.run_id
        raise
    if keys.MEASURE_ERROR_TAG in run.data.tags:  # measured now: the old complaint is gone
        records.set_run_tags(c.tracking.uri, run.info.run_id, {keys.MEASURE_ERROR_TAG: ""})
    if done == "unmeasured":
        _tell(f"{name}: run {run.info.run_id} was logged before runs stored their measurements: "
              f"E under {' and '.join(lacking)} needs retraining (force=true); its stored series "
              f"are unchanged")
    elif done == "added":
        log.info("%s: FINISHED as run %s; added E under %s from its stored measurements (no "
                 "training)", name, run.info.run_id, " and ".join(lacking))
    else:
        log.info("%s: skipped, FINISHED as run %s (force=true reruns it)", name, run.info.run_id)


def _relandscape(c: Config, run: Any, name: str, data: TensorData) -> None:
    def build() -> torch.nn.Module:
        return build_network(c, tuple(data.x_train.shape[1:]), data.num_classes).to(
            data.x_train.device)

    done = landscape.add_landscape(c, run, data, build)
    if done == "unweighted":
        _tell(f"{name}: run {run.info.run_id} did not keep its weights at the landscape's epochs "
              f"{landscape.epochs_of(c)} (trained with landscape.keep_weights=false, or before "
              f"runs kept them): its landscape needs retraining (force=true)")
    elif done == "added":
        log.info("%s: FINISHED as run %s; added the landscape (%s) from its kept weights (no "
                 "training)", name, run.info.run_id, ", ".join(c.landscape.measures))


def _load(cfg, device: torch.device) -> tuple[TensorData, torch.Tensor]:
    data = load_dataset(cfg).to(device)
    return data, data.probe(cfg.probe_size, cfg.probe_seed)


def _tell(message: str) -> None:
    """A warning for the job's log and, in a sweep, the launcher's terminal."""
    log.warning(message)
    events.emit("note", text=message)


def _prepare(plan: RunPlan) -> tuple[Any, ...]:
    """What a run needs before it trains: its checks, its data, the cell's ownership."""
    c = plan.config
    if not plan.preflighted:  # missing or corrupt data, configs that cannot train: before a run
        preflight(c, device=False)
    data, probe = _load(c.dataset, plan.device)
    pretrain = _load(c.pretrain.dataset, plan.device) if c.pretrain.epochs else None
    tags = plan.tags(data_digest=data.digest, dataset_label=data.label)
    return data, probe, pretrain, tags, ownership.acquire(plan.cell(tags), notify=_tell)


def train(cfg: DictConfig, parent_run_id: str | None = None,
          overrides: list[str] | None = None) -> dict[str, float]:
    """Run one configuration end to end; returns the last epoch's metrics ({} when another
    process trains the cell and tracking.on_taken=skip).

    The stages, each given its part of the plan: plan (validate once) -> preflight -> load ->
    own the cell (store.cells) -> build -> shared prefix, train with pruning steps and measure
    (run.stages, run.loop) -> log (run.callbacks). A configuration that already has a FINISHED run in the
    experiment is skipped; an interrupted one continues in its own run from its last
    checkpoint (force=true: a new run); one that another live process trains is waited for.
    """
    plan = make_plan(cfg, parent_run_id, overrides)
    c = plan.config
    events.emit("start", name=plan.name, epochs=c.trainer.epochs,
                stall_after_s=c.tracking.stall_after_s,
                cell=dataclasses.asdict(plan.cell(plan.tags())))  # for a death before its run
    procs.stop_requested.clear()  # a pool worker's previous job may have been stopped
    procs.stopped_run_closed.clear()
    if c.trainer.num_threads:
        torch.set_num_threads(c.trainer.num_threads)
    if threading.current_thread() is threading.main_thread():
        procs.stop_on_signals()  # SIGTERM marks the run KILLED, like Ctrl-C; a second is ignored
    if parent_run_id is None:  # a single run: a sweep's launcher checked the store already
        connection.check_reachable(c.tracking.uri)
    try:
        data, probe, pretrain, tags, got = _prepare(plan)
    except Exception as exc:  # in a sweep: a FAILED run of the cell says why, the sweep goes on
        if parent_run_id is not None and not procs.stop_requested.is_set():
            reason = f"failed before its run existed: {one_line(exc, c.tracking.uri)}"
            try:
                exc.mlflow_run_id = ownership.failed_cell(plan.cell(plan.tags()), reason)
            except Exception as store_error:  # the store itself is the trouble: as before
                log.warning("could not record the failed cell: %s", one_line(store_error))
            events.emit("end", status="failed", error=reason)
        raise
    if got.state == "skip":  # its cell has its run: a death from here on fails no cell
        events.emit("finished_run", run_id=got.run.info.run_id)
        try:
            _remeasure(c, got.run, plan.name, data)
        except Exception as exc:
            events.emit("end", status="failed", error=str(exc))
            raise
        events.emit("end", status="skipped")
        return dict(got.run.data.metrics)
    if got.state == "taken":
        _tell(f"{plan.name}: skipped, run {got.run_id} is being trained by {got.owner}")
        events.emit("end", status="skipped")
        return {}
    try:
        metrics = _own_run(plan, got, tags, (data, probe), pretrain)
    except KeyboardInterrupt:
        events.emit("end", status="interrupted")
        raise
    except Exception as exc:
        events.emit("end", status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    events.emit("end", status="finished")
    return metrics


def _own_run(plan: RunPlan, got: ownership.Ownership, tags: dict[str, Any],
             loaded: tuple[TensorData, torch.Tensor],
             pretrain: tuple[TensorData, torch.Tensor] | None) -> dict[str, float]:
    """Train the owned run (new, or resumed from its last checkpoint) and log it."""
    c, resumed = plan.config, got.state == "resume"
    with tempfile.TemporaryDirectory() as workdir, records.Run(
            c.tracking.uri, c.tracking.experiment, plan.name, tags, plan.parent_run_id,
            run_id=got.run_id, owner=got.owner, resumed=resumed,
            heartbeat_s=c.tracking.heartbeat_s) as run:
        events.emit("run", run_id=run.run_id, uri=c.tracking.uri, owner=run.owner)
        checkpoint = ownership.resume_checkpoint(c.tracking.uri, run.run_id, Path(workdir)) \
            if resumed else None
        if not resumed:
            _describe(run, plan, loaded[0], pretrain[0] if pretrain else None)
        data, probe = loaded
        model = build_network(c, tuple(data.x_train.shape[1:]), data.num_classes).to(plan.device)
        t = c.trainer
        ex = prepare(model, t.compile, t.channels_last, t.precision, plan.device, plan.steps(
            data.x_train.shape[0], pretrain[0].x_train.shape[0] if pretrain else 0))
        opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                              weight_decay=t.weight_decay)
        last, code = cb.Last(), f"{plan.commit} {plan.code_state}"
        callbacks = [*cb.standard(run, c, Path(workdir), code), last]
        try:
            with system_metrics(c.tracking.uri, run.run_id, c.tracking.system_metrics, resumed):
                _train_branch(Setup(c, model, opt, data, probe, pretrain, ex, code), plan.events,
                              plan.device, run, callbacks, Path(workdir), checkpoint)
        finally:
            cb.close(callbacks)
            _log_job_log(run)
        if c.tracking.log_model:
            log_pytorch_model(c.tracking.uri, run.run_id, forget_unit_graphs(model.cpu()),
                              probe[:2].cpu().numpy(), step=c.trainer.epochs,
                              tags={"config_hash": plan.identity})
        _flag_collapse(run, plan.name, last.metrics, data)
        return last.metrics


def _describe(run: records.Run, plan: RunPlan, data: TensorData,
              pretrain: TensorData | None) -> None:
    """A new run's params (the resolved config), config and overrides, its data sets as MLflow
    dataset inputs, and the uncommitted diff of the code it ran (when the tree was dirty)."""
    run.log_params(flatten(plan.resolved))
    run.log_text(OmegaConf.to_yaml(plan.resolved), "config.yaml")
    run.log_text("\n".join(plan.overrides) + "\n", "overrides.txt")
    for d, name, context in ((data, plan.config.dataset.name, "training"),
                             (pretrain, getattr(plan.config.pretrain.dataset, "name", ""),
                              "pretraining")):
        if d is not None:
            run.log_dataset(name, d.digest, d.source, context, {
                "label": d.label, "train": d.x_train.shape[0], "test": d.x_test.shape[0],
                "val": 0 if d.x_val is None else d.x_val.shape[0], "classes": d.num_classes})
    if plan.code_state.startswith("dirty") and (diff := code_diff()):
        run.log_text(diff, "code/git_diff.patch")


def _log_job_log(run: records.Run) -> None:
    """The job's log file (Hydra's <job dir>/<task>.log) as an artifact of its run, as it
    stands when the run ends; nothing outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    path = Path(str(hc.runtime.output_dir)) / f"{hc.job.name}.log"
    if path.is_file():
        try:
            run.log_artifact(path, "logs")
        except Exception as exc:  # the run's own outcome matters more than its log's copy
            log.warning("could not store the job log %s with run %s: %s", path, run.run_id, exc)


def _flag_collapse(run: records.Run, name: str, last: dict[str, Any], data: TensorData) -> None:
    """Tag a run whose network collapsed (report: listed apart, not counted in the claims)."""
    why = collapse(last.get(keys.DEAD_FRAC, 0.0), last.get(keys.TEST_ACC, 1.0),
                   chance_accuracy(data.y_test))
    if why is not None:
        run.set_tags({keys.COLLAPSED_TAG: why})
        _tell(f"{name} collapsed: {why} (tagged {keys.COLLAPSED_TAG}; the report leaves it out "
              f"of the claims)")
