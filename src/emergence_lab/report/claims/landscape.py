"""The paper's theory of the landscape (its D1, D2), read operationally: "sharpness" is the top
eigenvalue of the training loss's Hessian, "density of local minima" the Hessian's trace per
surviving parameter and the local minima along filter-normalized 1-D slices, "rugged" the slices'
roughness (runs with landscape=curvature or full). None of them counts minima in the full
parameter space; each verdict says which reading it takes. Claims without landscape series in
the runs have no row."""

from __future__ import annotations

import math

import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.report.claims.base import CLAIMS, Claim, Rows, paired_rows, references, wide
from emergence_lab.report.claims.emergence import RANDOM, partial_rank_test


def _epochs_after(g: pd.DataFrame, w: pd.DataFrame) -> list[int]:
    """The measured epochs after every run's pruning (at the pruning epoch the arms of a seed
    are one network)."""
    after = int(g.final_from.max()) if len(g) else 0
    return [int(t) for t in w.index if t > after and w.loc[t].notna().sum() >= 5]


def _at(table: pd.DataFrame, t: int, g: pd.DataFrame) -> pd.Series:
    """Each run's value at epoch t (NaN where it has none)."""
    row = table.loc[t] if t in table.index else pd.Series(dtype=float)
    return pd.Series([row.get(r, math.nan) for r in g.run_id], index=g.index, dtype=float)


def tracks(y_key: str):
    """Between runs at each measured epoch after pruning: E against y_key, the training loss
    at that epoch partialled out where the runs logged it."""
    def evaluate(claim: Claim, g: pd.DataFrame, hist: pd.DataFrame, e_key: str, rel_key: str
                 ) -> Rows:
        w = wide(hist, y_key, g.run_id)
        if w.empty or not w.notna().any().any():
            return
        e, loss = wide(hist, e_key, g.run_id), wide(hist, mk.TRAIN_LOSS, g.run_id)
        for t in _epochs_after(g, w):
            x, y, z = (_at(table, t, g) for table in (e, w, loss))
            yield "", f"epoch {t}", partial_rank_test(x, y, z)
    return evaluate


def density_change(g: pd.DataFrame, hist: pd.DataFrame, against: str = "control") -> pd.Series:
    """Per run: its Hessian trace per surviving parameter minus its reference run's, the mean
    over the measured epochs after pruning both have."""
    w, out = wide(hist, mk.TRACE_PER_PARAM, g.run_id), []
    for rid, ref, pe in zip(g.run_id, references(g, against), g.final_from, strict=True):
        if not isinstance(ref, str) or ref not in w:
            out.append(math.nan)
            continue
        d = (w[rid] - w[ref]).dropna()
        d = d[d.index > pe]
        out.append(float(d.mean()) if len(d) else math.nan)
    return pd.Series(out, index=g.index, dtype=float)


def paired_if_measured(claim: Claim, g: pd.DataFrame, hist: pd.DataFrame, e_key: str,
                       rel_key: str) -> Rows:
    """The paired tests, where the runs measured the landscape (else no row)."""
    if hist.key.eq(mk.TRACE_PER_PARAM).any():
        yield from paired_rows(claim, g, hist, e_key, rel_key)


SHARPNESS = "'sharpness' = the top eigenvalue of the training loss's Hessian on the probe batch"
READINGS = "no measure here counts minima in the full parameter space"
CLAIMS.add(Claim(
    "E_tracks_sharpness",
    "Higher E goes with a sharper, more rugged landscape: between runs at each measured epoch "
    "after pruning, E against the top Hessian eigenvalue, the training loss partialled out "
    "(partial Spearman)", +1, "partial ρ", meaning="more E, a sharper minimum (top eigenvalue)",
    caveat=f"{SHARPNESS}; {READINGS}; between runs (n = runs)", per_level=False,
    evaluate=tracks(mk.LAMBDA_MAX), comparison="between runs at one epoch",
    test="OLS t-test of rank(E) in rank(λmax) ~ rank(train loss) + rank(E); Holm-corrected",
    reads="E, landscape/lambda_max, training loss",
    reading="D1 'higher emergence indicates ... a more rugged loss landscape', as sharpness"))
CLAIMS.add(Claim(
    "E_tracks_roughness",
    "Higher E goes with a rougher landscape: between runs at each measured epoch after "
    "pruning, E against the roughness of filter-normalized slices, the training loss "
    "partialled out (partial Spearman)", +1, "partial ρ",
    meaning="more E, rougher slices of the loss",
    caveat=f"roughness = the mean squared second difference of the loss along random "
           f"filter-normalized 1-D slices (Li et al. 2018); {READINGS}; n = runs",
    per_level=False, evaluate=tracks(mk.ROUGHNESS), comparison="between runs at one epoch",
    test="OLS t-test of rank(E) in rank(roughness) ~ rank(train loss) + rank(E); Holm-corrected",
    reads="E, landscape/roughness, training loss",
    reading="D1 'a greater concentration of local minima and a more rugged loss landscape', "
            "as minima and roughness along slices"))
CLAIMS.add(Claim(
    "pruning_raises_curvature_density",
    "Pruning raises the density of curvature: the Hessian's trace per surviving parameter, "
    "pruned minus its control, the mean over the measured epochs after pruning", +1,
    "trace per parameter", lambda g, h, e, r: density_change(g, h),
    "more curvature per surviving weight than its control",
    f"'density of local minima' read as curvature per surviving parameter; {READINGS}",
    evaluate=paired_if_measured, reads="landscape/trace_per_param",
    reading="D2 'relative emergence ... the density of local minima', which pruning raises"))
CLAIMS.add(Claim(
    "curvature_density_vs_random",
    "Magnitude pruning raises the trace per surviving parameter beyond random pruning at the "
    "same amount (paired by seed)", +1, "trace per parameter vs random",
    lambda g, h, e, r: density_change(g, h, RANDOM),
    "more curvature per surviving weight than a random mask of the same sparsity",
    f"the matched null of pruning_raises_curvature_density; {READINGS}", against=RANDOM,
    evaluate=paired_if_measured, comparison="pruned minus random pruning at the same "
    "amount (same group and seed), paired by seed", reads="landscape/trace_per_param",
    reading="D2, against a null with the same parameter count"))

