"""Figures and reports; they read result files and never recompute."""
