"""Connectors: where records come from and where results go.

One module per family: ``memory`` (in-process lists, for tests), ``files``
(JSON Lines and CSV files, bounded or tailed), ``generator`` (seeded
synthetic streams for demos and benchmarks) and ``stdout``. Each module
imports its heavy dependencies (polars) only when a connector is opened.
"""
