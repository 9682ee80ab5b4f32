"""Distances between pictures and nearest-neighbour search: what the data, model and attack layers all measure with."""
