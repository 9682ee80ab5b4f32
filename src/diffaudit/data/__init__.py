"""Datasets: the embedded OpenMoji default and user imagefolders."""
