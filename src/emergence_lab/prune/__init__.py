"""Pruning: masks, schedules and resets (`core`), and the strategies' scores (`strategies`).

May import `measure`, `models` and `registry`; the run pipeline applies it.
"""
