"""The pruning strategies, one module each (each calls `STRATEGIES.add`; every module here is
imported), with a YAML in conf/pruning/. A strategy scores the network and returns masks (see
`prune.base.StrategyEntry`); the schedule, the resets and how masks are applied live in
`prune/schedules.py` and `prune/masks.py`. The options are the entries of `STRATEGIES`.
"""

from emergence_lab.registry import import_submodules

import_submodules(__name__)
