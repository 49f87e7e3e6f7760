"""dnntrick: an experiment runner for the tricks that make deep networks train."""

__version__ = "0.1.0"
