"""The MLflow store, the only package that imports mlflow: the connection and its retries
(`connection`), sweeps (`sweeps`), run logging (`records`), artifacts (`artifacts`), the ledger and
owners' leases (`ledger`), links into the UI (`links`), and cell ownership: skip, resume or wait
(`cells`).

May import `procs`.
"""
