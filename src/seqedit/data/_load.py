"""Shared reading loop: read a JSON/JSONL file, take a window of records, parse each, collect or skip failures."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Hashable
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

from seqedit.data._fields import InvalidField
from seqedit.data.errors import DatasetError, DatasetNotFoundError
from seqedit.data.report import LoadReport, SkippedRecord

T = TypeVar("T")

logger = logging.getLogger("seqedit.data")

# Edit requests must have unique case ids within a file.
BY_CASE_ID: tuple[str, Callable[[Any], Hashable]] = ("case_id", attrgetter("case_id"))

# A parser turns one raw record (with its index in the file) into a typed record, raising InvalidField.
Parser = Callable[[Any, int], T]


def existing_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, or DatasetNotFoundError naming the directory looked in."""
    target = Path(path).expanduser()
    if not target.is_file():
        raise DatasetNotFoundError(target.name, [target.parent.resolve()])
    return target


def read_utf8(path: str | os.PathLike[str]) -> str:
    """The text of an existing dataset file, or a DatasetError naming it (and the byte) if it is not UTF-8."""
    target = existing_file(path)
    try:
        return target.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            target, None, None, f"not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from exc


def read_json_records(path: str | os.PathLike[str]) -> list[Any]:
    """All records of a JSON list file (or JSON Lines when the name ends in .jsonl)."""
    target = existing_file(path)
    text = read_utf8(target)
    if target.suffix == ".jsonl":
        return [
            _parse_json(target, line, lineno)
            for lineno, line in enumerate(text.splitlines(), 1)
            if line.strip()
        ]
    data = _parse_json(target, text, None)
    if not isinstance(data, list):
        raise DatasetError(
            target, None, None, f"expected a JSON list of records, got a JSON {type(data).__name__}"
        )
    return data


def _parse_json(path: Path, text: str, lineno: int | None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        line = lineno if lineno is not None else exc.lineno
        raise DatasetError(path, None, None, f"not valid JSON at line {line}: {exc.msg}") from exc


def window(count: int, offset: int, limit: int | None) -> range:
    """Indices of the records to read: ``limit`` records starting at ``offset`` (raw file positions)."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    stop = count if limit is None else min(count, offset + limit)
    return range(min(offset, count), stop)


def parse_records(
    path: Path,
    raw: list[Any],
    parse: Parser[T],
    *,
    limit: int | None,
    offset: int,
    skip_invalid: bool,
    unique_key: tuple[str, Callable[[T], Hashable]] | None = None,
) -> LoadReport[T]:
    """Parse ``raw[offset:offset+limit]``; an invalid record raises DatasetError unless ``skip_invalid``.

    Record indices in errors and skip entries are positions in the whole file, so they stay valid with an offset.
    ``unique_key`` = (field name, key function) rejects a record whose key repeats an earlier one.
    """
    records: list[T] = []
    skipped: list[SkippedRecord] = []
    seen: set[Hashable] = set()
    for index in window(len(raw), offset, limit):
        try:
            record = parse(raw[index], index)
            if unique_key is not None:
                _check_unique(record, unique_key, seen)
        except InvalidField as exc:
            if not skip_invalid:
                raise DatasetError(path, index, exc.field, exc.reason) from exc
            skipped.append(SkippedRecord(index, exc.field, exc.reason))
            continue
        records.append(record)
    report = LoadReport(path=path, records=records, skipped=skipped)
    if skipped:
        logger.warning(report.summary())
    return report


def _check_unique(record: T, unique_key: tuple[str, Callable[[T], Hashable]], seen: set[Hashable]) -> None:
    field, key_of = unique_key
    key = key_of(record)
    if key in seen:
        raise InvalidField(field, f"duplicate {field} {key!r}")
    seen.add(key)
