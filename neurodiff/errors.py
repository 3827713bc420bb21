"""Exceptions raised to users: one actionable line each.

The CLI prints ``str(error)`` and exits with ``error.exit_code``; no traceback is shown.
"""


class NeurodiffError(Exception):
    """Base class of every error neurodiff raises on purpose."""

    exit_code: int = 1


class InputError(NeurodiffError):
    """The user's input (a file, a shape, a value, an option) cannot be used. Exit code 2."""

    exit_code = 2


class OutputExistsError(InputError):
    """An output file exists and ``force`` was not given."""


class ModelError(NeurodiffError):
    """A model (weights or card) is missing or inconsistent. Exit code 2."""

    exit_code = 2
