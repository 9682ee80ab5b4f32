"""Mitigations: each takes an artifact (dataset, model or sampling setting) and returns a new one plus
what it cost; nothing is changed in place."""
