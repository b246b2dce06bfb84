"""Eager against compiled (and compiled + channels-last) training steps, through the project's
own loop (`run.loop.train_epoch` with `run.execution.prepare`), for resnet20 on CIFAR-10 shapes
and the paper's MLP on Fashion-MNIST shapes; the compile warm-up; the share of a resnet20 epoch
spent measuring emergence.

The inputs are random tensors of the data sets' shapes (speed does not depend on the pixels).
Modes alternate over the repeats, so drifts in machine load hit them alike; each reports the
median seconds of an "epoch" of `--steps` steps, and the ratios to eager are what to read.

    .venv/bin/python benchmarks/execution.py [--steps 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import torch
from hydra import compose, initialize_config_dir

from emergence_lab.config import register_configs, validate
from emergence_lab.run import loop
from emergence_lab.run.execution import prepare
from emergence_lab.run.preflight import build_network

try:
    from epoch_overhead import ROOT
except ImportError:  # run from elsewhere
    from pathlib import Path

    ROOT = Path(__file__).resolve().parents[1]

NETS = {  # name: (overrides, input shape, batch size, steps in a real epoch)
    "resnet20": (["model=resnet20", "dataset=cifar10"], (3, 32, 32), 128, 50_000 // 128 + 1),
    "mlp": (["model=mlp", "dataset=fashion_mnist"], (1, 28, 28), 32, 60_000 // 32 + 1),
}
MODES = {"eager": ("false", "false"), "compiled": ("true", "false"),
         "compiled+channels_last": ("true", "true")}


def config(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return validate(compose("config", overrides=[*overrides, "trainer.device=cpu"]
                                if not torch.cuda.is_available() else overrides))


def one_mode(c, shape, batch, steps, mode, device):
    """(warm-up epoch s, steady epoch s) of `steps` steps of one execution mode. The warm-up is
    a cold one: inductor's on-disk cache (which a sweep's later cells reuse) is off."""
    compile_, last = MODES[mode]
    torch._dynamo.reset()
    torch._inductor.config.force_disable_caches = True
    warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")  # what we asked for
    model = build_network(c, shape, 10).to(device)
    ex = prepare(model, compile_, last, "fp32", device, steps=10**9)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(steps * batch, *shape, device=device)
    y = torch.randint(0, 10, (steps * batch,), device=device)
    times = []
    for epoch in range(3):  # the first pays the compilation
        t0 = time.perf_counter()
        loop.train_epoch(model, opt, x, y, batch, torch.Generator().manual_seed(epoch), ex)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[0] - statistics.median(times[1:]), statistics.median(times[1:])


def emergence_share(c, shape, train_epoch_s: float, device) -> float:
    """The share of a whole epoch (the training steps, then the epoch's measurements: the test
    set's 10,000 samples and E on the 2048-sample probe set) spent measuring E."""
    from emergence_lab.data import TensorData

    model = build_network(c, shape, 10).to(device)
    probe = torch.rand(c.dataset.probe_size, *shape, device=device)
    test = torch.rand(10_000, *shape, device=device)
    data = TensorData(test[:8], torch.zeros(8, dtype=torch.long, device=device), test,
                      torch.zeros(10_000, dtype=torch.long, device=device), 10, "bench")
    loop.measure(model, data, probe, c)  # the unit graph is traced once per model
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        e = loop.measure(model, data, probe, c)["time/emergence_s"]
        runs.append((e, time.perf_counter() - t0))
    e, measured = statistics.median(runs)
    return e / (train_epoch_s + measured)


def execution_ratios(steps: int, repeats: int) -> dict[str, float]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out: dict[str, float] = {}
    for net, (overrides, shape, batch, real_steps) in NETS.items():
        c = config(overrides)
        modes = [m for m in MODES if net == "resnet20" or "channels_last" not in m]
        runs: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
        for _ in range(repeats):
            for mode in modes:
                runs[mode].append(one_mode(c, shape, batch, steps, mode, device))
        steady = {m: statistics.median(s for _, s in r) for m, r in runs.items()}
        for m in modes:
            out[f"{net}_{m}_epoch_s"] = steady[m] * real_steps / steps
            if m != "eager":
                out[f"{net}_{m}_over_eager"] = steady["eager"] / steady[m]  # the speed-up
                out[f"{net}_{m}_warmup_s"] = statistics.median(w for w, _ in runs[m])
        if net == "resnet20":  # of an eager epoch, and of the fastest mode's
            for name, mode in (("eager", "eager"), ("fastest", min(steady, key=steady.get))):
                out[f"resnet20_emergence_share_of_{name}_epoch"] = emergence_share(
                    c, shape, steady[mode] * real_steps / steps, device)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="training steps per timed epoch")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    result = execution_ratios(args.steps, args.repeats)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.exit(main())
