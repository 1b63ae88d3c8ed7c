"""Errors the CLI turns into exit 2 with one line on stderr."""


class UserError(Exception):
    """Bad input or usage: the message is shown to the user as is, on one line."""
