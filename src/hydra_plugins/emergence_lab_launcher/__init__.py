"""emergence-lab's local launcher as a Hydra plugin (Hydra finds launchers in `hydra_plugins`):
the launcher class (`processes.py`) and its config (`config.py`); the pool itself is
`emergence_lab.sweep.launcher`, imported when a sweep launches."""
