"""Real cutouts as obtained, prepared as the networks were trained and checked against what they learned.

``sky`` (the residual sky level and background rms), ``noise`` (noise maps beside an image),
``cosmic_rays`` (L.A.Cosmic), ``resample`` (flux-conserving resampling), ``pipeline`` (the steps
in order, :class:`~lenscnn.preparation.pipeline.Preparation`) and ``domain`` (per-image statistics
and the flags of images unlike the training images).
"""
