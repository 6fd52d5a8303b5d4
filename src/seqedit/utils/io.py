"""Atomic writes: a crash never leaves a half-written file behind."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` sets as it reads)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: 0666 less the umask (usually 0644)."""
    return 0o666 & ~_umask()


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the same directory; rename it onto ``path`` only on success.

    The temporary file is named ``.<name>.<random>.tmp`` (a run directory's resume removes such leftovers
    of a killed process). The result gets the mode of the file it replaces, else the mode a normal new file
    gets (0666 less the umask, usually 0644): ``mkstemp`` and safetensors' writer both make 0600 files.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    mode = target.stat().st_mode & 0o777 if target.exists() else _default_mode()
    try:
        yield tmp
        tmp.chmod(mode)  # after writing: some writers replace the file they are given
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Valid JSON always: a NaN or infinity is written as null (JSON has no token for it)."""
    clean, _ = _finite(obj)
    write_text_atomic(path, json.dumps(clean, indent=indent, default=json_default, allow_nan=False) + "\n")


def _finite(value: Any) -> tuple[Any, bool]:
    """``value`` with every non-finite float (also inside lists, dicts, tensors) replaced by None, and
    whether any was."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    elif hasattr(value, "item") and not isinstance(value, (str, bytes, dict, list, tuple)):
        with suppress(ValueError, TypeError):
            value = value.item()
    if isinstance(value, float):
        return (value, False) if math.isfinite(value) else (None, True)
    if isinstance(value, dict):
        pairs = {k: _finite(v) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(bad for _, bad in pairs.values())
    if isinstance(value, (list, tuple)):
        items = [_finite(v) for v in value]
        return [v for v, _ in items], any(bad for _, bad in items)
    return value, False


def finite_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A result row as valid JSON: non-finite numbers become null and their fields are listed under
    ``non_finite`` (so "not measured" and "blew up" stay distinguishable)."""
    out: dict[str, Any] = {}
    flagged = list(row.get("non_finite") or [])
    for key, value in row.items():
        if key == "non_finite":
            continue
        out[key], bad = _finite(value)
        if bad and key not in flagged:
            flagged.append(key)
    if flagged:
        out["non_finite"] = flagged
    return out


def dumps_row(row: Mapping[str, Any]) -> str:
    """One JSONL line of a result row (valid JSON; see :func:`finite_row`)."""
    return json.dumps(finite_row(row), default=json_default, allow_nan=False)


def append_jsonl_atomic(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows to a JSONL file by rewriting it atomically (results files stay small)."""
    target = Path(path)
    old = target.read_text(encoding="utf-8") if target.exists() else ""
    new = "".join(dumps_row(r) + "\n" for r in rows)
    write_text_atomic(target, old + new)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    target = Path(path)
    if not target.exists():
        return []
    rows = []
    for lineno, line in enumerate(target.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{target}: line {lineno} is not valid JSON ({exc.msg})") from exc
    return rows


def save_tensors_atomic(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=dict(metadata) if metadata else None)


def load_tensors(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(path), device=str(device))


def json_default(obj: Any) -> Any:
    """JSON fallback for paths, tensors, numpy scalars and pydantic models."""
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN or Infinity); containers and
    numpy scalars are walked."""
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def strict_json(value: Any, indent: int | None = None) -> str:
    """JSON text that every parser accepts: non-finite numbers become null."""
    return json.dumps(finite_or_none(value), default=json_default, indent=indent, allow_nan=False)
