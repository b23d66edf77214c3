"""Errors a user can fix (a bad flag, a missing or unusable file): the CLI prints one line and exits 2."""


class UserError(ValueError):
    """A user's mistake; the message names the file or option and the problem, in full."""
