"""Measure once: what a stored measurement costs and what re-measuring saves.

For the paper's MLP on Fashion-MNIST and resnet20 on CIFAR-10 (each pruned 50 %, as after a
pruning step), on the real probe set (2048 samples): the bytes of one stored measurement (one
run-epoch), the time to take it (one probe pass), the time to read E from it in a new setting,
and the time of a training epoch. Reported as ratios: the emergence share of an epoch, and
re-measuring a paper sweep at a new θ against retraining it. Timings are medians of repeats.

    .venv/bin/python benchmarks/measure_once.py [--repeats 3] [--resnet-steps 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from epoch_overhead import new_model, setup

from emergence_lab.measure import Setting, measure, record
from emergence_lab.measure.graph import UNIT_LAYER_KINDS, cached_unit_graph
from emergence_lab.prune.base import PruningConfig
from emergence_lab.prune.masks import apply_pruning

ROOT = Path(__file__).resolve().parents[1]


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _train_steps(model, opt, data, batch: int, steps: int) -> float:
    """Seconds for `steps` training steps of `batch` (the epoch is steps_per_epoch times it)."""
    model.train()
    t0 = time.perf_counter()
    for i in range(steps):
        idx = torch.randint(0, data.x_train.shape[0], (batch,))
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i == 0:
            t0 = time.perf_counter()  # the first step warms up
    return (time.perf_counter() - t0) / max(steps - 1, 1)


def case(name: str, dataset: str, overrides: list[str], batch: int, steps: int, repeats: int,
         epochs: int) -> dict[str, float]:
    c, data, probe, device = setup(dataset, "cpu", overrides)
    model, opt = new_model(c, data.x_train.shape[1:], data.num_classes, device)
    step_s = _train_steps(model, opt, data, batch, steps)
    epoch_s = step_s * -(-data.x_train.shape[0] // batch)
    apply_pruning(model, PruningConfig(name="magnitude", amount=0.5), 0.5)
    graph = cached_unit_graph(model, probe[:1], UNIT_LAYER_KINDS)
    measure_s = _median(lambda: measure(model, probe, 1024, graph), repeats)
    m = measure(model, probe, 1024, graph)[0]
    size = len(record.to_bytes(m))
    unpruned = measure(new_model(c, data.x_train.shape[1:], data.num_classes, device)[0], probe)[0]
    at_s = {k: _median(lambda k=k: m.at(Setting("dormant", 0.1, k)), repeats)
            for k in ("units", "edges")}
    load_s = _median(lambda: record.Measurement.from_state(
        torch.load(__import__("io").BytesIO(record.to_bytes(m)), weights_only=True)), repeats)
    remeasure_run = (epochs + 1) * (load_s + at_s["units"] + at_s["edges"])
    retrain_run = epochs * (epoch_s + measure_s)
    return {"case": name, "epoch_s": epoch_s, "measure_s": measure_s,
            "emergence_share": measure_s / (epoch_s + measure_s),
            "bytes_per_run_epoch": size, "bytes_unpruned": len(record.to_bytes(unpruned)),
            "at_units_s": at_s["units"], "at_edges_s": at_s["edges"], "load_s": load_s,
            "remeasure_run_s": remeasure_run, "retrain_run_s": retrain_run,
            "retrain_over_remeasure": retrain_run / remeasure_run}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--resnet-steps", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "measure_once.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = [case("paper MLP 784-512-256-10, Fashion-MNIST, batch 64", "fashion_mnist",
                 ["experiment=paper_fmnist"], 64, 200, args.repeats, 20),
            case("resnet20, CIFAR-10, batch 128", "cifar10",
                 ["model=resnet20"], 128, args.resnet_steps, args.repeats, 30)]
    for r in rows:
        print(f"{r['case']}: epoch {r['epoch_s']:.1f} s, measurement {r['measure_s']:.2f} s "
              f"({100 * r['emergence_share']:.1f} % of an epoch), stored "
              f"{r['bytes_per_run_epoch'] / 1024:.0f} KiB per run-epoch after pruning "
              f"({r['bytes_unpruned'] / 1024:.0f} KiB unpruned); E in a new setting "
              f"{1000 * r['at_units_s']:.0f} ms (units), {1000 * r['at_edges_s']:.0f} ms (edges); "
              f"re-measuring a run {r['remeasure_run_s']:.1f} s vs retraining {r['retrain_run_s']:.0f} s "
              f"(x{r['retrain_over_remeasure']:.0f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
