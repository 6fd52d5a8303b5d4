"""Errors raised while finding, downloading and parsing datasets.

Messages always say *where* the problem is (file, record index, field) so a user can open the file and fix it
without reading our code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from seqedit.errors import UserError
from seqedit.settings import DATA_DIR_ENV


class DatasetError(UserError, ValueError):
    """A record (or the whole file) does not have the expected content."""

    def __init__(
        self, file: str | os.PathLike[str], index: int | None, field: str | None, reason: str
    ) -> None:
        self.file = Path(file)
        self.index = index
        self.field = field
        self.reason = reason
        super().__init__(_locate(self.file.name, index, field) + reason)


def _locate(file_name: str, index: int | None, field: str | None) -> str:
    """'counterfact-edit.json: record 17, field 'subject': ' (parts that are unknown are left out)."""
    parts = []
    if index is not None:
        parts.append(f"record {index}")
    if field is not None:
        parts.append(f"field '{field}'")
    return f"{file_name}: {', '.join(parts)}: " if parts else f"{file_name}: "


class UnknownDatasetError(UserError, ValueError):
    """A dataset name that is neither registered nor an existing file."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(
            f"unknown dataset {name!r}; known names: {', '.join(self.known)} (or give a file path)"
        )


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset file that is not where we looked; the message says where we looked and where to get it."""

    def __init__(
        self,
        file: str | os.PathLike[str],
        looked_in: Sequence[str | os.PathLike[str]],
        *,
        url: str | None = None,
        name: str | None = None,
        note: str | None = None,
    ) -> None:
        self.file = str(file)
        self.looked_in = tuple(Path(p) for p in looked_in)
        self.url = url
        self.name = name
        self.note = note
        super().__init__(self._message())

    def _message(self) -> str:
        what = f"dataset {self.name!r} (file {self.file})" if self.name else f"dataset file {self.file}"
        if self.looked_in:
            where = "looked in: " + ", ".join(str(p) for p in self.looked_in)
        else:
            where = "no data directory was given"
        env = os.environ.get(DATA_DIR_ENV)
        setting = f"{DATA_DIR_ENV}={env}" if env else f"{DATA_DIR_ENV} is not set"
        lines = [f"{what} not found; {where} ({setting})."]
        if self.url:
            how = f"seqedit.data.download_dataset({self.name!r})" if self.name else "a browser or curl"
            lines.append(f"Download it from {self.url} (e.g. with {how}) into the data directory")
            lines.append(f"and point {DATA_DIR_ENV} at that directory.")
        else:
            lines.append(f"Point {DATA_DIR_ENV} (or data_dir=) at the directory that holds it.")
        if self.note:
            lines.append(self.note)
        return " ".join(lines)


class DownloadError(UserError, OSError):
    """A download that failed (offline, HTTP error, unexpected content)."""
