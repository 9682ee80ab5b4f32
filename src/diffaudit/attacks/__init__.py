"""Attacks and detectors that audit a model for memorization."""
