"""Errors that are the user's to fix: the CLI prints them as one line, exit 2."""


class UserError(Exception):
    """Bad input: a missing path, a corrupt file, a wrong flag or checkpoint."""
