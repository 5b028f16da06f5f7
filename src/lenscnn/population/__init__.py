"""Population inference: the distribution of lens parameters over many lenses, from lenscnn's per-lens posteriors.

Each network posterior carries the training prior (the interim prior); :mod:`lenscnn.population.hierarchy`
divides it out by importance weighting and samples the population's hyperparameters with emcee
(Wagner-Carena et al. 2021, ApJ 909, 187). :mod:`lenscnn.population.lenses` reads the per-lens posteriors
(``predictions.csv`` with the ``model.json`` of the model that made them); :mod:`lenscnn.population.report`
writes the samples, the summary, the corner plot and the shrinkage plot.
"""
