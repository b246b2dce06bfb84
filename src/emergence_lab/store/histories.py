"""Metric histories of many runs at once, for the report: the long table (run_id, key, step,
value) it starts from."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from emergence_lab.store.connection import get_client, retry

FETCH_WORKERS = 8  # below MLflow's SQLAlchemy pool (5 + 10 overflow): 16 threads exhausted it
# on a report of 1,000 runs ("QueuePool limit of size 5 overflow 10 reached")


BULK_RUNS = 500  # run ids per query of a database store's bulk history (SQLite takes 32,766)


def metric_histories(uri: str, run_ids: list[str], keys: list[str],
                     workers: int = FETCH_WORKERS) -> list[tuple[str, str, int, float]]:
    """(run_id, key, step, value) of many runs and metrics: from a database store in one query
    per key and BULK_RUNS runs (MLflow's get_metric_history_bulk; one query per run and key took
    most of a report of 2,000 runs), else (a tracking server) run by run, concurrently."""
    client = get_client(uri)
    bulk = getattr(getattr(client._tracking_client, "store", None), "get_metric_history_bulk",
                   None)
    if bulk is not None:
        return [(m.run_id, key, m.step, m.value)
                for key in keys for i in range(0, len(run_ids), BULK_RUNS)
                for m in retry(lambda i=i, key=key: bulk(run_ids[i:i + BULK_RUNS], key,
                                                         max_results=None))]

    def one(pair: tuple[str, str]) -> list[tuple[str, str, int, float]]:
        rid, key = pair
        return [(rid, key, m.step, m.value) for m in client.get_metric_history(rid, key)]

    pairs = [(rid, key) for rid in run_ids for key in keys]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [row for rows in pool.map(one, pairs) for row in rows]
