"""emergence-lab's local launcher as a Hydra plugin (Hydra finds launchers in `hydra_plugins`).

The plugin is this thin class and its config; the pool itself is `emergence_lab.run.launcher`.
"""
