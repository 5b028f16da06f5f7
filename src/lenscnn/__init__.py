"""lenscnn: convolutional networks that measure strong gravitational lenses."""

__version__ = "0.1.0"
