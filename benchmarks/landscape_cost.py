"""What the landscape adds to a run's training: the paper's MLP (784-512-256-10) on
Fashion-MNIST, its protocol (plain SGD, batch 32), the time of a training epoch against the time
of one landscape measurement (landscape=curvature, landscape=full) on the configured probe batch.
A run of the default sweep trains 20 epochs and measures at 3, so the ratio reported is
3 x measurement / (20 x epoch), the share the landscape adds to a run's training time.

    .venv/bin/python benchmarks/landscape_cost.py [--device auto] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from epoch_overhead import ROOT, setup
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from emergence_lab.config import register_configs, validate
from emergence_lab.models import build_model
from emergence_lab.run.landscape import measure, probe_batch
from emergence_lab.run.loop import train_epoch


def landscape_config(option: str, device: str):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"landscape={option}", "dataset=fashion_mnist",
                                           "trainer=paper", f"trainer.device={device}"])
    return validate(cfg).landscape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "landscape_cost.json"))
    args = ap.parse_args()
    c, data, _, device = setup("fashion_mnist", args.device, ["trainer=paper"])
    torch.manual_seed(0)
    model = build_model(c.model, tuple(data.x_train.shape[1:]), data.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=c.trainer.lr)
    epochs = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        train_epoch(model, opt, data.x_train, data.y_train, c.trainer.batch_size,
                    torch.Generator().manual_seed(i))
        epochs.append(time.perf_counter() - t0)
    epoch = statistics.median(epochs)
    out = {"device": str(device), "threads": torch.get_num_threads(), "epoch_s": epoch,
           "batch_size": c.trainer.batch_size, "epochs_per_run": c.trainer.epochs}
    for option in ("curvature", "full"):
        lc = landscape_config(option, args.device)
        batch = probe_batch(data, lc)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            measure(model, batch, lc)
            times.append(time.perf_counter() - t0)
        m = statistics.median(times)
        out[option] = {"measure_s": m, "settings": OmegaConf.to_container(OmegaConf.structured(lc)),
                       "share_of_training": 3 * m / (c.trainer.epochs * epoch)}
        print(f"landscape={option}: {m:.2f} s a measurement, {epoch:.2f} s an epoch: "
              f"3 measurements add {100 * out[option]['share_of_training']:.1f} % to a run's "
              f"{c.trainer.epochs} epochs", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
