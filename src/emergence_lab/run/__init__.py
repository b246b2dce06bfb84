"""One run and one sweep: the composed config and its checks (`config`), identity, the run
pipeline (`pipeline`), the plain training loop (`loop`), checkpoints and the shared prefix,
re-measuring finished runs, and the sweep's Hydra callback (`sweep`).

May import every stage package but `report`.
"""
