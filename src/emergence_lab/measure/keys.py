"""The metric-key schema: every logged name is built here (training, report and UI import it).

Emergence in the default setting (the paper's: mean > 0.05, units) is
`emergence/E` and `emergence/relative`; any other setting names itself,
`emergence/E/<rule>/<θ>/<counting>` (e.g. `emergence/E/dormant/0.1/edges`), with the fraction
rule's share as `fraction-0.25`. The counted layers are the run's (threshold.layers, part of
its identity: they say what the network's units are), so keys do not name them.
"""

from __future__ import annotations

from emergence_lab.measure.rules import RULES
from emergence_lab.measure.setting import Setting

TRAIN_LOSS, TRAIN_ACC = "train/loss", "train/acc"
TEST_LOSS, TEST_ACC = "test/loss", "test/acc"
VAL_LOSS, VAL_ACC = "val/loss", "val/acc"  # with dataset.val_fraction > 0
# the best so far of the network the run ends with (as lightning-hydra-template's val/acc_best)
BEST = {TEST_ACC: "test/acc_best", VAL_ACC: "val/acc_best"}
ACC_CHANGE = "test/acc_change"  # the report's derived series: test accuracy minus its last
E, RELATIVE = "emergence/E", "emergence/relative"
LAMBDA_MAX, TRACE = "landscape/lambda_max", "landscape/trace"  # the training loss's Hessian
TRACE_PER_PARAM = "landscape/trace_per_param"  # the trace per surviving parameter
SLICE_MINIMA, ROUGHNESS = "landscape/slice_minima", "landscape/roughness"  # filter-normalized slices
LANDSCAPE_KEYS = (LAMBDA_MAX, TRACE, TRACE_PER_PARAM, SLICE_MINIMA, ROUGHNESS)
E_MAX = "emergence/E_max"  # the largest E the counted layers allow (formula.max_emergence)
E_AFTER, RELATIVE_AFTER = "pruning/E_after", "pruning/relative_after"
TEST_ACC_AFTER, SPARSITY_AFTER = "pruning/test_acc_after", "pruning/sparsity_after"
SPARSITY, PARAMS = "pruning/sparsity", "params/nonzero"
EMERGENCE_TIME, EPOCH_TIME, THREADS = "time/emergence_s", "time/epoch_s", "time/threads"
DEAD_FRAC, ZERO_FRAC = "sparsity/dead_frac", "sparsity/zero_frac"
PRETRAIN = "pretrain/"  # the prefix of a pretraining epoch's metrics
MEASURE_ERROR_TAG = "measure_error"  # a run tag: why a setting's series could not be added
COLLAPSED_TAG = "collapsed"  # a run tag: why its network collapsed (measure.baselines.collapse)

# Runs logged before the settings keys: E at each θ of threshold.grid per activity mode (the
# report still reads them: the same activations, the mean and fraction rules with units).
# The rules with such a grid name it (measure.rules.RuleEntry.grid_key).
THETA_KEYS = {r.name: f"emergence/E_theta{r.grid_key}/" for r in RULES if r.grid_key is not None}
RELATIVE_THETA_KEYS = {r.name: f"emergence/relative_theta{r.grid_key}/" for r in RULES
                       if r.grid_key is not None}
PAPER = Setting()  # the paper's setting: emergence/E and emergence/relative


def dormant_frac(tau: float) -> str:
    return f"sparsity/dormant_frac/{tau:g}"


def active_frac(layer: str) -> str:
    return f"emergence/active_frac/{layer}"


def setting_keys(s: Setting) -> tuple[str, str]:
    """(E key, relative E key) of an analysis setting. The counted layers are the run's own
    (threshold.layers), so keys do not name them."""
    s = s.normalized()
    if (s.rule, s.theta, s.counting, s.min_fraction) == (PAPER.rule, PAPER.theta, PAPER.counting,
                                                         PAPER.min_fraction):
        return E, RELATIVE
    rule = f"{s.rule}-{s.min_fraction:g}" if s.min_fraction != PAPER.min_fraction else s.rule
    tail = f"/{rule}/{s.theta:g}/{s.counting}"
    return E + tail, RELATIVE + tail


def parse_setting(key: str) -> Setting | None:
    """The setting an E key names (`emergence/E` the default); None for any other key."""
    if key == E:
        return Setting()
    if not key.startswith(E + "/"):
        return None
    parts = key[len(E) + 1:].split("/")
    if len(parts) != 3:
        return None
    rule, frac = (parts[0].split("-", 1) + [str(PAPER.min_fraction)])[:2]
    try:
        return Setting(rule, float(parts[1]), parts[2], float(frac))
    except ValueError:
        return None


def setting_of(e_key: str) -> Setting | None:
    """The setting of an E key, the θ grid's (`emergence/E_theta/0.1`: mean, units) included."""
    for rule, prefix in THETA_KEYS.items():
        if e_key.startswith(prefix):
            return Setting(rule, float(e_key[len(prefix):]))
    return parse_setting(e_key)


def relative_of(e_key: str) -> str:
    """The relative-E key beside an E key."""
    return RELATIVE + e_key[len(E):] if e_key.startswith(E) else e_key


MEASUREMENT = "_measurement"  # not a metric: the epoch's stored measurement rides with them
