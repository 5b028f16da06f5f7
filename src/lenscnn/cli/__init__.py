"""Thin Hydra entry points: each ``lenscnn-<name>`` is ``python -m lenscnn.cli.<name>``."""
