"""User-facing errors: the CLI prints their message (no traceback) and exits with status 2."""


class AlbenchError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""


class DatasetNotFoundError(AlbenchError):
    """A dataset's files are missing or incomplete under the data root."""


class ConfigError(AlbenchError):
    """A grid file or spec is malformed or names something unknown."""


class CheckpointError(AlbenchError):
    """A trial checkpoint cannot be read or belongs to another trial."""


class DivergedError(AlbenchError):
    """Training produced a non-finite loss; continuing would only waste compute."""
