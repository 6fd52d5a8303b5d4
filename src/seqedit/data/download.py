"""Fetch a registered dataset into the data directory (plain urllib, atomic write, offline-aware).

Nothing is kept that was not verified: the answer is streamed into a temporary file with a size cap
(``DatasetSpec.max_bytes``; also checked against Content-Length before reading), its SHA-256 is compared
with ``DatasetSpec.sha256`` when the source table records one, and the file must parse with the dataset's
own reader (the layout, at least one record) before it is renamed into place."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from seqedit import __version__
from seqedit.data.builtin import builtin_facts_path
from seqedit.data.errors import DownloadError
from seqedit.data.registry import DatasetSpec, get_spec, resolve_data_dir
from seqedit.settings import DATA_DIR_ENV, OFFLINE_ENV, get_settings

DEFAULT_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


def download_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    overwrite: bool = False,
) -> Path:
    """Download dataset ``name`` to ``data_dir / <its registered path>`` and return that path.

    An existing file is kept unless ``overwrite``. ``url`` overrides the registered source (a mirror). Refuses
    in offline mode. Pickled sources are converted to JSON without executing any code from the pickle.
    """
    spec = get_spec(name)
    if spec.bundled:
        return builtin_facts_path()
    source = url or spec.url
    if source is None:
        raise DownloadError(f"no download URL is known for dataset {name!r}; pass url=")
    target = _target_path(spec, data_dir)
    if target.exists() and not overwrite:
        return target
    if get_settings().offline:
        raise DownloadError(
            f"offline mode is on ({OFFLINE_ENV} or HF_HUB_OFFLINE), so {source} is not fetched; "
            f"download it by hand to {target} or turn offline mode off"
        )
    _download_to(source, target, spec, timeout)
    return target


def _target_path(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None) -> Path:
    base = resolve_data_dir(data_dir)
    if base is None:
        raise DownloadError(
            f"no data directory to download {spec.name!r} into: pass data_dir or set {DATA_DIR_ENV}"
        )
    return base / spec.download_target


def _download_to(url: str, target: Path, spec: DatasetSpec, timeout: float) -> None:
    # Imported here so that `import seqedit.data` does not pull in torch (seqedit.utils.io saves tensors).
    from seqedit.utils.io import atomic_path

    with atomic_path(target) as tmp:
        digest = _fetch(url, tmp, timeout, spec.max_bytes)
        if spec.sha256 is not None and digest != spec.sha256.lower():
            raise DownloadError(
                f"{url}: SHA-256 {digest} differs from the pinned {spec.sha256}; the source changed or the "
                "download was corrupted (nothing was kept)"
            )
        if spec.download_format == "pickle":
            _pickle_to_json(tmp, url)
        elif target.suffix == ".json":
            _check_json(tmp, url)
        _check_layout(spec, tmp, url)


def _fetch(url: str, dest: Path, timeout: float, max_bytes: int) -> str:
    """Stream ``url`` into ``dest`` (at most ``max_bytes``); return the SHA-256 of what was read."""
    request = urllib.request.Request(url, headers={"User-Agent": f"seqedit/{__version__}"})
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as out:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise DownloadError(f"{url} announces {int(declared):,} bytes, more than the cap of {max_bytes:,}")
            size = 0
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(f"{url} sent more than the cap of {max_bytes:,} bytes; nothing was kept")
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"HTTP {exc.code} ({exc.reason}) while downloading {url}") from exc
    except urllib.error.URLError as exc:
        raise DownloadError(
            f"could not reach {url}: {exc.reason} (no network, or a proxy is needed?)"
        ) from exc
    except TimeoutError as exc:
        raise DownloadError(f"no answer from {url} within {timeout:g} s") from exc


def _check_layout(spec: DatasetSpec, path: Path, url: str) -> None:
    """The file must read as the dataset it claims to be (every record valid, at least one)."""
    try:
        records = spec.reader(path)
    except (ValueError, KeyError, TypeError) as exc:  # DatasetError is a ValueError
        raise DownloadError(f"{url} does not have the layout of dataset {spec.name!r}: {exc}") from exc
    if not len(records):
        raise DownloadError(f"{url} holds no records of dataset {spec.name!r}")


def _check_json(path: Path, url: str) -> None:
    """Catch an HTML error page or a Git LFS pointer served in place of the data."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DownloadError(f"{url} did not return JSON ({exc})") from exc


class _PlainDataUnpickler(pickle.Unpickler):
    """Loads only builtin containers and scalars: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is accepted")


def _pickle_to_json(path: Path, url: str) -> None:
    try:
        data = _PlainDataUnpickler(io.BytesIO(path.read_bytes())).load()
        if not isinstance(data, list):
            raise TypeError(f"expected a list of records, got {type(data).__name__}")
        text = json.dumps(data, ensure_ascii=False, indent=1)
    except Exception as exc:  # a malformed pickle can fail in many ways; all mean "not usable"
        raise DownloadError(f"{url} is not a usable pickled list of records: {exc}") from exc
    path.write_text(text + "\n", encoding="utf-8")
