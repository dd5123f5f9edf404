"""MRBench: curate grouped multi-reference image datasets and evaluate multi-reference generators."""

__version__ = "0.1.0"
