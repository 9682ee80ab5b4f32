"""Typed errors: each message names the offending item and, where one exists, the fix."""


class DiffauditError(Exception):
    """Base class, so the CLI can print any of these as a one-line message instead of a traceback."""


class DatasetError(DiffauditError):
    """A dataset folder, its metadata or one of its images is unusable."""


class ConfigError(DiffauditError):
    """A configuration file or flag is invalid."""


class CheckpointError(DiffauditError):
    """A model or checkpoint folder is missing, incomplete or in an unsafe (pickle) format."""
