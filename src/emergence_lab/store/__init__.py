"""The MLflow store: the client with retries, run logging and artifacts (`tracking`, the only
module that imports mlflow), and cell ownership through the store's ledger (`cells`).

May import `procs`.
"""
