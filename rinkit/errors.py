"""User-facing errors: the CLI prints these as one line and exits non-zero, no traceback."""


class RinkitError(Exception):
    """A problem with the user's input (config, file, checkpoint, plugin name...)."""
