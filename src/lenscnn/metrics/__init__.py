"""Regression metrics, calibration of predicted uncertainties and the metric tables.

Pure functions of tensors (and torchmetrics metrics) that both training and evaluation use,
so neither has to import the other.
"""
