"""Many runs: the sweep's Hydra callback (`callback`: every job checked before any run exists,
the MLflow parent run), its jobs (`jobs`: the grid by Hydra's own override parser, the frozen
plans that travel with them), the local launcher's pool and workers (`launcher`, `worker`:
the core of `hydra/launcher=processes`), and what it shows (`status`, `display`).

May import `run`, `config` and the stage packages; nothing in emergence_lab imports it.
"""
