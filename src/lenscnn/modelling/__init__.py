"""Lens-model fits with lenstronomy, started from the network's estimate (``lenscnn-refine``)."""
