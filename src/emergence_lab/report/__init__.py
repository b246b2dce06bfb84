"""The report of a sweep: the per-run table (`table`), the tidy table in and out (`tidy`), one
entry per claim (`claims`), statistics (`stats`), verdicts, analyses, figures and rendering.

May import `measure`, `prune`, `store` and `registry`; only the scripts import it.
"""
