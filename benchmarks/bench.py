"""`make bench`: the project's performance as ratios measured in one run, written to JSON.

1. seconds per epoch of the project's training (emergence, tracking, checkpoints on) against a
   bare loop over the same in-memory tensors, and against a torchvision DataLoader + ToTensor
   loop (targets: <= 1.10x the bare loop; >= 5x faster than the DataLoader loop);
2. the share of an epoch spent measuring emergence (target: < 3 %);
3. the paper_fmnist sweep with the shared pre-prune state and 2 parallel jobs against the naive
   cost, every branch from scratch one at a time, in one command (target: <= 0.6x) and in
   four; --quick shortens it to prune after 2 epochs and stop at 8 (the same structure);
4. the report over 100 runs of 20 epochs (target: < 30 s);
5. eager against compiled and compiled + channels-last steps for resnet20 and the MLP, the
   compile warm-up, and the share of a resnet20 epoch spent measuring emergence (target: < 5 %)
   (benchmarks/execution.py).

    .venv/bin/python benchmarks/bench.py [--quick] [--out benchmarks/results/bench.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from epoch_overhead import bare_epochs, new_model, project_epochs, setup  # noqa: E402
from execution import execution_ratios  # noqa: E402

from emergence_lab.report.build import build_report  # noqa: E402
from emergence_lab.report.synthetic import big_sweep  # noqa: E402
from emergence_lab.store import histories, records  # noqa: E402


def dataloader_epochs(c, device, epochs: int) -> list[float]:
    """The usual torchvision loop: FashionMNIST + ToTensor through a DataLoader."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    ds = datasets.FashionMNIST(c.dataset.data_dir, train=True, transform=transforms.ToTensor())
    loader = DataLoader(ds, batch_size=c.trainer.batch_size, shuffle=True)
    model, opt = new_model(c, ds[0][0].shape, 10, device)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def epoch_ratios(epochs: int, repeats: int) -> dict[str, float]:
    c, data, probe, device = setup("fashion_mnist", "auto")
    bare, project, emergence_s = [], [], []
    for _ in range(repeats):  # alternate, so drifts in machine load hit both alike
        bare += bare_epochs(c, data, device, epochs)
        t, e = project_epochs(c, data, probe, device, epochs)
        project += t
        emergence_s += e
    loader = dataloader_epochs(c, device, epochs)
    med = statistics.median
    return {"bare_epoch_s": med(bare), "project_epoch_s": med(project),
            "dataloader_epoch_s": med(loader),
            "project_over_bare": med(project) / med(bare),
            "dataloader_over_project": med(loader) / med(project),
            # The most any loop over these tensors could reach here: the bare loop does the
            # training arithmetic and nothing else.
            "dataloader_over_bare": med(loader) / med(bare),
            "emergence_share_of_epoch": sum(emergence_s) / sum(project)}


def sweep_seconds(args: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "-m", *args], cwd=cwd,
                   check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def sweep_ratio(quick: bool) -> dict[str, float]:
    """The shared-prefix sweep on 2 jobs against every branch from scratch, one at a time.

    The naive cost is measured two ways: the same command with one job at a time and a cache
    folder per branch (nothing shared; the target is judged on this one, as it differs from
    the shared sweep only in sharing and parallelism), and four commands, one per branch (what
    running the branches by hand costs, four start-ups included).
    """
    shape = ["pruning.epoch=2", "trainer.epochs=8"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        base = ["experiment=paper_fmnist", f"tracking.uri=sqlite:///{tmp}/b.db",
                f"dataset.data_dir={ROOT / 'data'}", "tracking.progress=false", *shape]
        shared = sweep_seconds(base + ["tracking.experiment=shared",
                                       f"tracking.cache_dir={tmp}/cache"], Path(tmp))
        serial = sweep_seconds(base + ["tracking.experiment=naive", "hydra.launcher.n_jobs=1",
                                       f"tracking.cache_dir={tmp}/cache-1-" "${pruning.amount}"],
                               Path(tmp))
        by_hand = 0.0
        for amount in ("0", "0.3", "0.5", "0.7"):  # a cache of its own: nothing shared
            by_hand += sweep_seconds(base + ["tracking.experiment=by_hand",
                                             "hydra.launcher.n_jobs=1", f"pruning.amount={amount}",
                                             f"tracking.cache_dir={tmp}/cache-4-{amount}"], Path(tmp))
        after = 2 if quick else 5  # the epochs after pruning: every branch trains them
        parallel, alone = (branch_epoch_s(f"sqlite:///{tmp}/b.db", e, after)
                           for e in ("shared", "naive"))
    return {"sweep_shared_2jobs_s": shared, "sweep_naive_serial_s": serial,
            "sweep_naive_4_commands_s": by_hand,
            "sweep_shared_over_naive": shared / serial,
            "sweep_shared_over_4_commands": shared / by_hand,
            # What the second parallel job adds: epochs trained per second by two jobs side by
            # side over one job alone with all the threads.
            "branch_epoch_s_2_jobs": parallel, "branch_epoch_s_1_job": alone,
            "parallel_throughput_gain": 2 * alone / parallel}


def branch_epoch_s(uri: str, experiment: str, after: int) -> float:
    """Median seconds per training epoch after the pruning epoch, over an experiment's runs."""
    runs = [r.info.run_id for r in records.experiment_runs(uri, experiment)]
    return statistics.median(v for _, _, step, v in
                             histories.metric_histories(uri, runs, ["time/epoch_s"]) if step > after)


def report_seconds() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/r.db"
        parent = big_sweep(uri, seeds=25, epochs=20)
        t0 = time.perf_counter()
        build_report(uri, sweep=parent, out=f"{tmp}/report", log_back=False)
        return {"report_100_runs_s": time.perf_counter() - t0}


TARGETS = {"project_over_bare": ("<=", 1.10), "dataloader_over_project": (">=", 5.0),
           "emergence_share_of_epoch": ("<", 0.03), "sweep_shared_over_naive": ("<=", 0.6),
           "report_100_runs_s": ("<", 30.0), "resnet20_emergence_share_of_eager_epoch": ("<", 0.05),
           "resnet20_compiled_over_eager": (">=", 1.5)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a shorter sweep (prune at 2, 8 epochs)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per loop and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30, help="steps per timed epoch in part 5")
    ap.add_argument("--only-execution", action="store_true", help="part 5 alone")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench.json"))
    args = ap.parse_args()
    result = {"device": "cuda" if torch.cuda.is_available() else "cpu",
              "threads": torch.get_num_threads(), "quick": args.quick}
    if not args.only_execution:
        result |= {**epoch_ratios(args.epochs, args.repeats), **sweep_ratio(args.quick),
                   **report_seconds()}
    result |= execution_ratios(args.steps, args.repeats)
    result["targets_met"] = {k: (result[k] <= v if op == "<=" else result[k] >= v if op == ">="
                                 else result[k] < v) for k, (op, v) in TARGETS.items() if k in result}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result.items():
        target = f"  (target {TARGETS[k][0]} {TARGETS[k][1]})" if k in TARGETS else ""
        print(f"{k:28s} {v:.4g}{target}" if isinstance(v, float) else f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
