"""Checkpoints (pruning masks included) and the shared pre-prune state of sibling runs."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from torch import nn

from emergence_lab.files import atomic_save
from emergence_lab.procs import pid_alive
from emergence_lab.prune.masks import freeze, prepare_for_state
from emergence_lab.run import events
from emergence_lab.store import digests

log = logging.getLogger(__name__)


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    **extra: Any) -> None:
    """Write model (with masks) and optimizer state atomically; extra holds plain values."""
    atomic_save({"model": model.state_dict(), "optimizer": optimizer_state(model, optimizer),
                 **extra}, path)


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The optimizer's parameters by name, in its order."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict | None:
    """The optimizer's state dict plus its parameter names.

    torch keys optimizer state by position, and pruning re-registers `weight` after `bias`, so
    positions differ between an optimizer built before pruning and one built after; names do not.
    """
    if optimizer is None:
        return None
    return {"state_dict": optimizer.state_dict(), "names": _param_names(model, optimizer)}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load a state saved by `optimizer_state`, matching parameters by name."""
    position = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    remap = [position[name] for name in saved["names"]]
    sd = saved["state_dict"]
    state = {remap[i]: v for i, v in sd["state"].items()}
    # torch pairs a group's saved ids with the live parameters by position: list them in order.
    groups = [{**g, "params": sorted(remap[i] for i in g["params"])} for g in sd["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def load_checkpoint(path: str | Path, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Restore a checkpoint into model (re-creating pruning masks) and optimizer."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    restore_state(payload, model, optimizer)
    return payload


def restore_state(payload: dict[str, Any], model: nn.Module,
                  optimizer: torch.optim.Optimizer | None = None) -> None:
    """Load a payload's model and optimizer states; pruning masks are re-created first."""
    prepare_for_state(model, payload["model"])
    model.load_state_dict(payload["model"])
    freeze(model)  # a checkpoint in torch's reparametrized form: weight = orig * mask now
    if optimizer is not None and payload.get("optimizer") is not None:
        load_optimizer_state(model, optimizer, payload["optimizer"])


def _machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Waiters:
    """Sibling jobs on this machine that wait for a prefix being computed, and their threads.

    A waiting job registers a marker file (host, pid, torch threads) while it blocks on the
    lock; the job computing the prefix borrows those threads, which would otherwise sit idle,
    and gives them back when it is done. Markers of other hosts (a cache folder shared by a
    cluster) and of processes that died are ignored.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.host = socket.gethostname()

    def register(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / f"{self.host}--{os.getpid()}"
        marker.write_text(str(torch.get_num_threads()))
        return marker

    def threads(self) -> int:
        """Threads registered by live waiting processes of this host."""
        total = 0
        for marker in self.folder.glob(f"{self.host}--*") if self.folder.is_dir() else ():
            try:
                pid, threads = int(marker.name.rsplit("--", 1)[1]), int(marker.read_text())
            except (ValueError, OSError):  # removed meanwhile, or half written
                continue
            if pid != os.getpid() and pid_alive(pid):
                total += threads
        return total


def _load_cache(path: Path) -> dict[str, Any] | None:
    """A cached payload, or None when it does not load: caches are disposable, so a truncated or
    tampered file is moved aside (named in a warning) and the payload computed again."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, refused pickle, ...: whatever torch raises
        _move_aside(path, "corrupt", f"does not load ({type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:200]})")
        return None


def _move_aside(path: Path, tag: str, why: str) -> None:
    """A cache file (or what stands where it goes) moved aside as <name>.<tag>-<time>, said in
    the job's log and on the sweep's console (a note)."""
    aside = path.with_name(f"{path.name}.{tag}-{int(time.time())}")
    os.replace(path, aside)
    message = f"prefix cache {path} {why}; moved to {aside.name}, computing it again"
    log.warning(message)
    events.emit("note", text=message)


@dataclass(frozen=True)
class CacheCheck:
    """Where a cache file's digest is recorded (store.digests) and which code version reads it:
    a file whose digest or writer differs is not trusted."""

    uri: str
    experiment: str
    code: str  # the commit and the state of the tree (code_version.code_state)

    def fault(self, key: str, path: Path) -> str | None:
        return digests.fault(self.uri, self.experiment, f"cache.{key}", path, self.code)

    def record(self, key: str, path: Path) -> None:
        digests.record(self.uri, self.experiment, f"cache.{key}", path, self.code)


def _trusted(path: Path, key: str, check: CacheCheck | None) -> dict[str, Any] | None:
    """The cached payload when it is the one recorded; a file that is not (edited, written by
    other code, unrecorded) is moved aside, named with what differs, and computed again."""
    why = check.fault(key, path) if check is not None else None
    if why is None:
        return _load_cache(path)
    _move_aside(path, "untrusted", f"is not trusted: {why}")
    return None


def shared_prefix(cache_dir: str | Path, key: str,
                  compute: Callable[[Callable[[], None]], dict[str, Any]], lend: bool = True,
                  check: CacheCheck | None = None) -> tuple[dict[str, Any], bool]:
    """The cached payload for `key`, computed by the first caller; (payload, was_cached).
    `check`: the file is read only when its digest and writer are the ones recorded.

    A file lock serialises siblings: one trains, the others wait and then load its result.
    `compute(borrow)` should call `borrow()` between epochs: with `lend`, it sets torch's threads
    to the job's own plus those of the siblings waiting on this machine (at most the machine's
    CPUs).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.pt"
    lock = FileLock(str(path) + ".lock")
    waiters = Waiters(cache_dir / f"{key}.waiting")
    try:
        lock.acquire(timeout=0)
    except Timeout:  # a sibling is computing it: lend it our threads while we wait
        marker = waiters.register()
        try:
            lock.acquire()
        finally:
            marker.unlink(missing_ok=True)
    try:
        if path.is_file():
            payload = _trusted(path, key, check)
            if payload is not None:
                return payload, True
        elif path.exists():  # a folder (or a device) where the cache file goes
            _move_aside(path, "untrusted", "is not a file")
        own = torch.get_num_threads()

        def borrow() -> None:
            if lend:
                torch.set_num_threads(min(max(own, _machine_cpus()), own + waiters.threads()))

        try:
            payload = compute(borrow)
        finally:
            torch.set_num_threads(own)
        atomic_save(payload, path)
        if check is not None:
            check.record(key, path)
        return payload, False
    finally:
        lock.release()
