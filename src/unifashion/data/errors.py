"""Errors raised by the data layer. Each names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """Base class for every data-layer error."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset file or folder that the loader needs is missing."""

    def __init__(self, path: str | Path, hint: str = ""):
        self.path = Path(path)
        message = f"dataset file not found: {self.path}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class DatasetFormatError(DatasetError, ValueError):
    """A dataset file exists but does not have the expected format."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"malformed dataset file {self.path}: {problem}")
