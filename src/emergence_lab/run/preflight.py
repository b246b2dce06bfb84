"""What a run would find out only after it started, checked before any run exists: the device,
pretraining shapes, finite initial weights, a model emergence can read; and the seeded network."""

from __future__ import annotations

import logging

import torch
from torch import nn

from emergence_lab.config import Config
from emergence_lab.data import shape_of
from emergence_lab.measure.graph import unit_graph
from emergence_lab.models import INITS, build_model
from emergence_lab.prune.base import check_ignore
from emergence_lab.run.plan import resolve_device

log = logging.getLogger(__name__)


def build_network(c: Config, in_shape: tuple[int, ...], num_classes: int,
                  seed: int | None = None) -> nn.Module:
    """The seeded (trainer.seed unless `seed`), initialized network of a run; non-finite initial
    weights are a config error (the init's settings), found before training rather than blamed
    on the learning rate."""
    torch.manual_seed(c.trainer.seed if seed is None else seed)
    model = build_model(c.model, in_shape, num_classes)
    INITS[c.init.name].apply(model, c.init)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        settings = ", ".join(f"init.{k}={v}" for k, v in vars(c.init).items() if k != "name")
        raise ValueError(f"{settings} (init={c.init.name}) makes the initial weights non-finite "
                         f"({bad[0]}); use a smaller value")
    return model


def preflight(c: Config, device: bool = True) -> None:
    """What a run would find out only after it started, checked before any run exists: the
    device (where jobs run on this machine), pretraining shapes, finite initial weights."""
    if device:
        resolve_device(c.trainer.device)
    shape, classes = shape_of(c.dataset)
    if c.pretrain.epochs:
        pre_shape, pre_classes = shape_of(c.pretrain.dataset)
        if (pre_shape, pre_classes) != (shape, classes):
            raise ValueError(
                f"pretrain.dataset={c.pretrain.dataset.name} has inputs {pre_shape} and "
                f"{pre_classes} classes, dataset={c.dataset.name} has {shape} and {classes}: "
                f"the network cannot move from one to the other; pick a data set of the same "
                f"shape, or pretrain=none")
    model = build_network(c, shape, classes)
    check_ignore(model, c.pruning)
    layers = c.threshold.layers
    # Traced here, so a model emergence cannot read fails before any run starts.
    counted = len(unit_graph(model, torch.zeros((1, *shape)), layers).layers)
    if counted < 2:
        raise ValueError(f"emergence needs at least 2 counted layers: threshold.layers="
                         f"{list(layers)} counts {counted} of this model; add hidden layers or "
                         f"'output' to threshold.layers")
