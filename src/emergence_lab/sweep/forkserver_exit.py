"""Imported by the sweep's fork server alone (the last of `worker.PRELOAD`): when its launcher
has gone, the server leaves without the interpreter's teardown, which frees every object of
torch, MLflow and Hydra for 1 to 2 s of CPU and keeps the launcher's output open meanwhile
(a caller reading it to the end waits). Its workers never run atexit handlers: multiprocessing
ends them with os._exit."""

import atexit
import os

atexit.register(os._exit, 0)  # registered last, so it runs first
