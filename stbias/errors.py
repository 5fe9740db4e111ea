"""Errors a user can act on: the entry point prints them as one message, no traceback."""


class StbiasError(ValueError):
    """A bad value, a missing file or an impossible setting, with what would be valid."""
