"""The errors of the catalogue index, all subclasses of :class:`CatalogueIndexError`."""

from __future__ import annotations


class CatalogueIndexError(Exception):
    """Base class for errors of the catalogue index."""


class DuplicateItemError(CatalogueIndexError, ValueError):
    """``add`` was given an id that the index already holds."""


class UnknownItemError(CatalogueIndexError, KeyError):
    """An id that the index does not hold."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class IndexLockedError(CatalogueIndexError):
    """Another process (or instance) has the index open for writing."""


class ModelMismatchError(CatalogueIndexError, ValueError):
    """The index was built by a model other than the one given: its vectors mean nothing to it."""
