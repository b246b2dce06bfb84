"""MLflow's system metrics of a run (tracking.system_metrics: CPU, memory, disk and network,
GPU where there is one, as `system/...` metrics), sampled by MLflow's own monitor while the
run trains."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

SAMPLING_S = 10.0  # MLflow's default interval


@contextlib.contextmanager
def system_metrics(uri: str, run_id: str, on: bool, resumed: bool = False,
                   sampling_s: float = SAMPLING_S) -> Iterator[None]:
    """While the block runs, MLflow's SystemMetricsMonitor logs the machine's metrics to the
    run (continuing its steps when the run was resumed); nothing when `on` is false."""
    if not on:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=sampling_s,
                                   resume_logging=resumed, tracking_uri=uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
