"""Errors the CLI turns into exit 2 with one line on stderr, and the one-line warnings beside them."""

from __future__ import annotations

import sys

SHOWN = 3  # how many offending names a one-line message lists


class UserError(Exception):
    """Bad input or usage: the message is shown to the user as is, on one line."""


def listed(names) -> str:
    """The first few names, then ', ...' when there are more: for a one-line message."""
    names = [str(name) for name in names]
    return ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")


def warn(message: str) -> None:
    """A warning on one line of stderr (the message's own line breaks and runs of spaces folded)."""
    print(f"warning: {' '.join(message.split())}", file=sys.stderr)


def note(message: str) -> None:
    """A line of information on stderr, folded like warn's (no "warning:" before it)."""
    print(" ".join(message.split()), file=sys.stderr)


def needs_labels(what: str) -> UserError:
    """The one error for class-conditional work on a dataset without class labels."""
    return UserError(f"{what} needs class labels, and this dataset has none (give --labels, or put the images "
                     "in class subfolders)")
