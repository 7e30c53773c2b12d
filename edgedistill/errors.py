"""Errors that the CLI turns into a clear message and a non-zero exit, without a traceback."""


class EdgedistillError(Exception):
    """Base class for errors a user can act on."""

    exit_code = 1


class RecipeError(EdgedistillError):
    """A recipe (or a --set override) does not validate."""

    exit_code = 2


class AssetError(EdgedistillError):
    """A model or data set cannot be found, fetched or verified."""


class GateError(EdgedistillError):
    """A stage lost more quality than the recipe allows."""


class StorageError(EdgedistillError):
    """A run or cache folder cannot be written or read (full disk, read-only, permissions)."""
