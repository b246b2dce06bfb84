"""Epoch time of the project's training (emergence, tracking, checkpoints on) against a bare loop.

Both loops train the same model on the same in-memory tensors; they alternate, several times,
and the ratio of their median epoch times is reported (the machine is noisy: read ratios, not
single timings). Also reports the share of an epoch spent measuring emergence.

    .venv/bin/python benchmarks/epoch_overhead.py [--dataset fashion_mnist] [--epochs 2] [--repeats 3]
    .venv/bin/python benchmarks/epoch_overhead.py --dataset cifar10 --set model=resnet20 \
        trainer.batch_size=128 --epochs 1 --repeats 1   # resnet20: the share of E in an epoch
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from emergence_lab.config import register_configs, validate
from emergence_lab.data import load_dataset
from emergence_lab.models import build_model
from emergence_lab.run import callbacks as cb
from emergence_lab.run.loop import Branch, fit
from emergence_lab.run.plan import resolve_device
from emergence_lab.store import records

ROOT = Path(__file__).resolve().parents[1]


def setup(dataset: str, device_name: str, overrides: list[str] = ()):
    """(config, data on the device, probe set, device) of the default MLP (or the model the
    overrides pick) on `dataset`."""
    register_configs()
    tmp = tempfile.mkdtemp()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"dataset={dataset}", f"trainer.device={device_name}", "tracking.progress=false",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db", "tracking.experiment=bench",
            f"dataset.data_dir={ROOT / 'data'}", *overrides])
    c = validate(cfg)
    device = resolve_device(c.trainer.device)
    data = load_dataset(c.dataset).to(device)
    return c, data, data.probe(c.dataset.probe_size, c.dataset.probe_seed), device


def new_model(c, in_shape, num_classes: int, device):
    torch.manual_seed(c.trainer.seed)
    model = build_model(c.model, in_shape, num_classes).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=c.trainer.lr, momentum=c.trainer.momentum)


def bare_epochs(c, data, device, epochs: int) -> list[float]:
    """The reference: shuffled index slices, forward, backward, step; nothing else."""
    model, opt = new_model(c, data.x_train.shape[1:], data.num_classes, device)
    x, y, bs = data.x_train, data.y_train, c.trainer.batch_size
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(x.shape[0]).to(device)
        for start in range(0, x.shape[0], bs):
            idx = perm[start:start + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def project_epochs(c, data, probe, device, epochs: int) -> tuple[list[float], list[float]]:
    """The project's loop with its per-epoch callback (metrics, MLflow, checkpoints)."""
    model, opt = new_model(c, data.x_train.shape[1:], data.num_classes, device)
    times, emergence_s = [], []
    with records.Run(c.tracking.uri, c.tracking.experiment, "bench", {}) as run, \
            tempfile.TemporaryDirectory() as workdir:
        callbacks = cb.standard(run, c, Path(workdir))
        t_last = time.perf_counter()

        def clock(e):  # after the project's own callbacks
            nonlocal t_last
            now = time.perf_counter()
            times.append(now - t_last)
            emergence_s.append(e.metrics["time/emergence_s"])
            t_last = now

        fit(model, opt, data, probe, c, 1, epochs, [*callbacks, clock], branch=Branch())
        cb.close(callbacks)
    return times, emergence_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", nargs="*", default=[], metavar="OVERRIDE",
                    help="Hydra overrides, e.g. model=resnet20 trainer.batch_size=128")
    ap.add_argument("--out", default="benchmarks/results/epoch_overhead.json")
    args = ap.parse_args()
    c, data, probe, device = setup(args.dataset, args.device, args.set)
    bare, project, emergence_s = [], [], []
    for _ in range(args.repeats):  # alternate, so drifts in machine load hit both alike
        bare += bare_epochs(c, data, device, args.epochs)
        t, e = project_epochs(c, data, probe, device, args.epochs)
        project += t
        emergence_s += e
    result = {
        "dataset": args.dataset, "overrides": args.set, "device": str(device),
        "threads": torch.get_num_threads(), "epochs_each": args.epochs * args.repeats,
        "bare_epoch_s_median": statistics.median(bare),
        "project_epoch_s_median": statistics.median(project),
        "project_over_bare": statistics.median(project) / statistics.median(bare),
        "emergence_share_of_epoch": sum(emergence_s) / sum(project),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
