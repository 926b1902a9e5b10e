"""sourcelens: deep-learning models of galaxy sources in strong gravitational lensing.

The library behind the sourcelens Snakemake workflow. Every function is usable from a
notebook; nothing here imports snakemake.
"""

__version__ = "0.1.0"
