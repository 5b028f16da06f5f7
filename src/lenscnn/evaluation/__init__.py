"""Evaluation: sets with known truth, the pipeline that scores a model on them, and its outputs."""
