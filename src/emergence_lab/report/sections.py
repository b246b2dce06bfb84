"""The report's sections (heading, title, body) and its Markdown; the one-sentence answer and the
sweep parent's note."""

from __future__ import annotations

import re

import pandas as pd

from emergence_lab.measure import keys as mk
from emergence_lab.measure.setting import Setting
from emergence_lab.report import safe, verdicts
from emergence_lab.report.analyses import (
    stopping_by_run,
    stopping_summary,
)
from emergence_lab.report.assemble import Report
from emergence_lab.report.views import (
    OVERVIEW,
    display_table,
    lr_table,
    paper_cnn_table,
    paper_numbers,
    paper_table,
    rel_table,
    run_links,
    sensitivity_table,
    sparsity_table,
    top_table,
    verdict_table,
)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:80] or "all"


def folder_name(name: str) -> str:
    """The report's folder: the sweep's own name (as MLflow shows it), with anything that cannot
    be in a file name replaced."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:150] or "report"


def _gaps(gaps: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    parts = [(title, items) for title, items in (
        ("Missing cells", gaps["missing_jobs"]), ("Failed runs", gaps["failed_runs"]),
        ("Incomplete groups", gaps["incomplete_groups"]),
        ("Duplicates (same config_hash: one measurement, counted once)",
         gaps.get("duplicates", [])),
        ("E never near zero after pruning (the plateau claim cannot use these runs)",
         gaps.get("never_near_zero", [])),
        ("Unpaired runs (no control of their seed: not compared, not guessed)",
         gaps.get("unpaired", [])),
        ("Empty values in the table (those epochs left out of what reads the column)",
         gaps.get("empty_values", [])),
        ("Collapsed runs (units dead, accuracy at or below chance: left out of every table and "
         "claim unless --include-collapsed)", gaps.get("collapsed", [])),
        ("Code versions: these runs were made by more than one version of the code (commit, and "
         "the digest of an edited tree); a comparison across them may measure the code",
         gaps.get("code_versions", []))) if items]
    return parts or [("", ["The sweep is complete: every cell has a FINISHED run."])]


NOTES = ("Replicates are seeds. Each claim is tested on differences pruned minus control paired "
         "by seed (n = seeds), per pruning level, and across levels on each seed's mean "
         "difference over the levels. Holm's correction: one family is " + verdicts.HOLM_FAMILY +
         ", in every table (the settings table's paper-setting row shows the main table's p). "
         "Verdicts: "
         "'supported' when the Holm-corrected test is significant (α = 0.05) on the claimed side, "
         "'contradicted' when significant on the other side, 'inconclusive' when not (its "
         "95 % interval includes 0; the seeds that would detect the observed effect at 80 % "
         "power follow), 'not enough data' below two paired differences. Effects: mean [95 % "
         "t-interval], in points of accuracy, epochs or % of the control's E. Tables: mean ± "
         "half-width of the 95 % t-interval over seeds. Accuracies are test accuracies unless "
         "marked train; convergence counts epochs after the prune epoch.")


def one_sentence(rep: Report) -> str:
    """The sweep in one sentence."""
    p = rep.per_run
    groups, seeds = p.group.nunique(), sorted(p.seed.unique())
    cells = p.groupby(["group", "label"]).ngroups
    epochs = int(p.last_epoch.max())
    prune = sorted(set(p.prune_epoch[p.level > 0]))
    when = f"pruned after epoch {', '.join(map(str, prune))}" if prune else "nothing pruned " \
        "(controls only)"
    return (f"{rep.name}: {len(p)} FINISHED runs, {cells} cells ({p.label.nunique()} pruning "
            f"arms incl. the control{'' if groups == 1 else f' in {groups} groups'}) × "
            f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}), "
            f"{epochs} epochs, {when}.")


Section = tuple[int, str, object, bool]  # (heading level, title, body, collapsed in HTML)


def group_sections(rep: Report, group: str) -> list[Section]:
    """One group's full tables: the summary, the paper's numbers, relative E explained, the
    verdict by analysis setting, E by θ, the sparsity baselines and the figures."""
    out: list[Section] = []
    out.append((3, group, display_table(rep.summary, group), True))
    paper = paper_table(rep.summary, group)
    if not paper.empty:
        out.append((4, "The paper's accuracies beside ours (train and test)", paper, False))
    if rep.landscape and group in rep.landscape:
        out.append((4, "The loss landscape at the measured epochs (top Hessian eigenvalue and "
                       "trace on the surviving weights; filter-normalized slices)",
                    rep.landscape[group], False))
    cnn = paper_cnn_table(rep.per_run, group)
    if not cnn.empty:
        out.append((4, "The paper's CNN: E at epoch 1 beside its 634,398", cnn, False))
    if rep.e_summaries is not None and not rep.e_summaries.empty:
        summ = rep.e_summaries[rep.e_summaries.group == group].drop(columns="group")
        if not summ.empty:
            out.append((4, "lowers_E under other summaries: the offset's and the summary's "
                           "effect (% change in E, pruned against control)", summ, True))
    rel = rel_table(rep.rel_explained, group)
    if not rel.empty:
        out.append((4, "Relative E explained: the change in E and in parameters (their "
                       "log-ratios add up), under both countings", rel, False))
    out.append((4, "Verdict by analysis setting: activity rule, θ or τ, route counting "
                   "(the same stored measurements; units: the paper's formula, edges: "
                   "surviving connections only)", sensitivity_table(rep.sensitivity, group),
                False))
    if not rep.thetas.empty and len(rep.thetas.columns) > 3:
        out.append((4, "Final E by threshold θ", rep.thetas[rep.thetas.group == group]
                    .drop(columns="group"), True))
    if not rep.sparsity.empty:
        out.append((4, "Is E just sparsity? Correlation with the test accuracy still to come "
                       "(Spearman, each run's epochs after pruning; '|': sparsity baselines "
                       "partialled out)", sparsity_table(rep.sparsity, group), False))
    out.append((-1, "", [f"{slug(group)}__{stem}" for stem in rep.figures[group]], False))
    return out


def sections(rep: Report) -> list[Section]:
    """The report's content in order: the part read in a minute first, the full tables after."""
    several = len(rep.figures) > 1
    out: list[Section] = [(0, "", one_sentence(rep), False),
                          (0, "", f"E is read in the setting {rep.setting}"
                           + (" (the paper's; `--setting` reads another)." if rep.setting ==
                              Setting().describe() else ".") + " Speed (trainability) reads the "
                           "training accuracy, the level the test accuracy (each verdict says "
                           "what it reads); the plateau claims and the patience stopper read " + (
                               "validation accuracy (dataset.val_fraction)." if not rep.per_run.empty
                               and (rep.per_run.selection_key == mk.VAL_ACC).all() else
                               "test accuracy: the runs have no validation split "
                               "(dataset.val_fraction=0.1 holds one out)."), False)]
    head = verdicts.headline(rep.tests)
    out.append((2, "Verdicts", verdict_table(head, several, explain=True, rel=rep.rel_explained,
                                             paper=paper_numbers(rep.summary)), False))
    for group in sorted(rep.figures):
        out.append((3 if several else 2, group if several else "Per pruning level",
                    top_table(rep.summary, group), False))
    out.append((2, "Full tables", [], False))
    out.append((3, "Every test (per level and across levels)", verdict_table(rep.tests, several),
                True))
    if len(rep.figures) > 1:
        out.append((3, "Overview: every cell of every group",
                    display_table(rep.summary, columns=OVERVIEW), True))
    for group in sorted(rep.figures):
        out += group_sections(rep, group)
    if not rep.lr.empty:
        for base in sorted(set(rep.lr.group)):
            out.append((3, f"Re-tuned learning rate after pruning: {base}", lr_table(rep.lr, base),
                        False))
    if not rep.calibration.empty:
        out.append((3, "Calibration: the paper's open choices by distance to its accuracies",
                    rep.calibration, False))
    eps, patience = rep.stop_rule
    out.append((3, f"Stopping: E <= {eps:g} for {patience} epochs against the standard "
                   f"criteria (after the last pruning step; runs trained to the end)",
                stopping_summary(rep.stopping), False))
    out.append((4, "Per run: the epoch it fires at (epochs saved, test accuracy given up)",
                stopping_by_run(rep.stopping), True))
    out.append((3, "Runs", run_links(rep.per_run, rep.ui), True))
    out.append((2, "Completeness", [], False))
    out += [(3, title, items, False) for title, items in _gaps(rep.gaps)]
    return out


def markdown(rep: Report) -> str:
    """The report as Markdown."""
    lines = [f"# Pruning versus convergence: {safe.md_text(rep.name)}", ""]
    for level, title, body, _ in sections(rep):
        lines += [f"{'#' * level} {safe.md_text(title)}", ""] if title else []
        if isinstance(body, pd.DataFrame):
            lines += [safe.for_markdown(body).to_markdown(index=False) if not body.empty
                      else "(none)", ""]
        elif isinstance(body, str):
            lines += [safe.md_text(body), ""]
        elif level < 0:
            lines += [f"![{stem}]({stem}.png)" for stem in body] + [""]
        elif body:
            lines += [f"- {safe.md_text(item)}" for item in body] + [""]
    claims = [f"- {c.name}: {c.statement}. Reads: {c.reads or 'the per-run table'}; the paper, "
              f"read as: {c.reading or '–'}; compared: {c.comparison}; test: {c.test}."
              for c in verdicts.CLAIMS]
    return "\n".join(lines + ["## Notes", "", NOTES, "", "The claims:", "", *claims, ""])


def parent_note(rep: Report, report_link: str, compare_link: str | None = None) -> str:
    """The description of a sweep's parent run: its sentence, its verdicts, its report and (one
    click) emergence/E and test/acc of its runs over the epochs."""
    table = verdict_table(verdicts.headline(rep.tests), len(rep.figures) > 1)
    compare = [f"[Compare emergence/E and test/acc across the runs]({compare_link}) (one curve "
               f"a run; the run names say the pruning level)"] if compare_link else []
    return "\n\n".join([f"**{safe.md_text(one_sentence(rep))}**",
                         safe.for_markdown(table).to_markdown(index=False) if not table.empty
                         else "(no verdicts)",
                         *compare,
                         f"Full report: [report.html]({report_link}) (artifact report/ of run "
                         f"report-{safe.md_text(rep.name)})"])


def _key_part(text: str) -> str:
    """A piece of an MLflow metric or tag key: letters, digits and _ - . / : and spaces."""
    return re.sub(r"[^\w\-./: ]", "_", text.replace("%", "pct")).strip()


def parent_fields(rep: Report) -> tuple[dict[str, float], dict[str, str]]:
    """What a sweep's parent run shows of its verdicts as MLflow fields: each headline claim's
    effect as a metric `claim/<claim>[/<strategy>][/<scope>]` (a column of the runs table, a
    chart), and its verdict with the effect's interval as the tag `verdict/...` beside it."""
    table = verdicts.headline(rep.tests)
    groups = table.group.nunique() if not table.empty else 0
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for _, r in table.iterrows():
        parts = [r.claim, r.strategy if isinstance(r.strategy, str) else "",
                 "" if r.scope in (verdicts.ALL_LEVELS, verdicts.ALL_RUNS) else str(r.scope),
                 str(r.group) if groups > 1 else ""]
        key = "/".join(_key_part(p) for p in parts if p)
        if pd.notna(r["mean"]):
            metrics[f"claim/{key}"] = float(r["mean"])
        tags[f"verdict/{key}"] = f"{verdicts.verdict_text(r)}: {verdicts.effect_text(r)}"
    return metrics, tags
