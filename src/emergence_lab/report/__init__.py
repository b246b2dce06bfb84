"""The report of a sweep, store -> tidy table -> claims -> tables and figures: the per-run and
summary tables (`table`), the tidy table in and out (`tidy`), one entry per claim (`claims`),
statistics (`stats`), verdicts, analyses, figures, the report's content (`assemble`), what a
person reads (`views`, `sections`, `page`) and the entry points (`build`).

May import `measure`, `prune`, `store` and `registry`; only the scripts import it.
"""
