"""Orchestration: audits and the study, each step's output kept in a run folder."""
