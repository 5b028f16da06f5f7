"""Hydra configs, shipped inside the package so every entry point finds them from any directory."""
