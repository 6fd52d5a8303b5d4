"""download_dataset against a local HTTP server (no real network)."""

from __future__ import annotations

import json
import os
import pickle
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from seqedit.data import DownloadError, download_dataset, load_downstream, load_edit_requests

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture(scope="module")
def server_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("www")


@pytest.fixture(scope="module")
def server_url(server_root: Path) -> Iterator[str]:
    """Serve ``server_root`` on 127.0.0.1 from a thread, once for this module."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=os.fspath(server_root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def base_url(server_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server's URL, with online mode on and no proxy in the way."""
    for name in (*PROXY_VARIABLES, "SEQEDIT_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return server_url


def test_download_writes_the_registered_path(
    base_url: str, server_root: Path, fixtures: Path, tmp_path: Path
) -> None:
    (server_root / "zsre.json").write_bytes((fixtures / "zsre_mend.json").read_bytes())
    data_dir = tmp_path / "data"
    path = download_dataset("zsre", data_dir, url=f"{base_url}/zsre.json")
    assert path == data_dir / "zsre" / "zsre-1k.json"
    assert len(load_edit_requests("zsre", data_dir=data_dir)) == 3
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_existing_file_is_kept_unless_overwrite(
    base_url: str, server_root: Path, fixtures: Path, tmp_path: Path
) -> None:
    served = (fixtures / "known_facts.json").read_text(encoding="utf-8")
    (server_root / "known.json").write_text(served, encoding="utf-8")
    target = tmp_path / "known_facts" / "known_1000.json"
    target.parent.mkdir()
    target.write_text('[{"old": 1}]', encoding="utf-8")
    download_dataset("known-facts", tmp_path, url=f"{base_url}/known.json")
    assert target.read_text(encoding="utf-8") == '[{"old": 1}]'
    download_dataset("known-facts", tmp_path, url=f"{base_url}/known.json", overwrite=True)
    assert target.read_text(encoding="utf-8") == served


def test_pickled_source_becomes_json(base_url: str, server_root: Path, tmp_path: Path) -> None:
    records = [
        {"sentence": "a fine film ", "label": 1, "idx": 3},
        {"sentence": "dull ", "label": 0, "idx": 4},
    ]
    (server_root / "sst2.pkl").write_bytes(pickle.dumps(records))
    path = download_dataset("sst2", tmp_path, url=f"{base_url}/sst2.pkl")
    assert json.loads(path.read_text(encoding="utf-8")) == records
    assert [e.label for e in load_downstream("sst2", data_dir=tmp_path)] == [1, 0]


def test_pickle_with_code_references_is_refused(base_url: str, server_root: Path, tmp_path: Path) -> None:
    (server_root / "evil.pkl").write_bytes(pickle.dumps([{"path": Path("/etc")}]))
    with pytest.raises(
        DownloadError, match=r"not a usable pickled list of records: refusing to load pathlib"
    ):
        download_dataset("cola", tmp_path, url=f"{base_url}/evil.pkl")
    assert not (tmp_path / "downstream" / "cola.json").exists()


def test_http_error_is_clear_and_leaves_nothing(base_url: str, tmp_path: Path) -> None:
    with pytest.raises(
        DownloadError, match=r"HTTP 404 .* while downloading http://127\.0\.0\.1:\d+/missing\.json"
    ):
        download_dataset("counterfact", tmp_path, url=f"{base_url}/missing.json")
    assert not (tmp_path / "counterfact").exists() or not list((tmp_path / "counterfact").iterdir())


def test_non_json_answer_is_rejected(base_url: str, server_root: Path, tmp_path: Path) -> None:
    (server_root / "page.html").write_text("<html>rate limited</html>", encoding="utf-8")
    with pytest.raises(DownloadError, match=r"did not return JSON"):
        download_dataset("counterfact-train", tmp_path, url=f"{base_url}/page.html")


def test_unreachable_host(base_url: str, tmp_path: Path) -> None:
    # Port 9 (discard) is closed on test machines, so the connection is refused at once.
    with pytest.raises(DownloadError, match=r"could not reach http://127\.0\.0\.1:9/x\.json"):
        download_dataset("zsre", tmp_path, url="http://127.0.0.1:9/x.json", timeout=5)


def test_offline_mode_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQEDIT_OFFLINE", "1")
    with pytest.raises(
        DownloadError, match=r"offline mode is on .* download it by hand to .*wikitext2-test.txt"
    ):
        download_dataset("wikitext2-test", tmp_path)


def test_no_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEQEDIT_DATA_DIR", raising=False)
    with pytest.raises(DownloadError, match=r"no data directory .* set SEQEDIT_DATA_DIR"):
        download_dataset("zsre")


def _with_spec(monkeypatch: pytest.MonkeyPatch, name: str, **changes: object) -> None:
    """Register ``name`` with changed source-table fields (sha256, max_bytes) for one test."""
    import dataclasses

    from seqedit.data import download as download_module
    from seqedit.data.registry import get_spec

    changed = dataclasses.replace(get_spec(name), **changes)
    monkeypatch.setattr(download_module, "get_spec", lambda n: changed if n == name else get_spec(n))


def test_pinned_sha256_is_checked(
    base_url: str, server_root: Path, fixtures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    body = (fixtures / "zsre_mend.json").read_bytes()
    (server_root / "pinned.json").write_bytes(body)
    _with_spec(monkeypatch, "zsre", sha256="0" * 64)
    with pytest.raises(DownloadError, match="SHA-256"):
        download_dataset("zsre", tmp_path, url=f"{base_url}/pinned.json")
    assert not any(tmp_path.rglob("*.json")) and not any(tmp_path.rglob("*.tmp"))
    _with_spec(monkeypatch, "zsre", sha256=hashlib.sha256(body).hexdigest())
    assert download_dataset("zsre", tmp_path, url=f"{base_url}/pinned.json").read_bytes() == body


def test_size_cap_refuses_a_large_answer(
    base_url: str, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (server_root / "big.json").write_text(json.dumps([{"x": "y" * 5000}]))
    _with_spec(monkeypatch, "counterfact-train", max_bytes=1000)
    with pytest.raises(DownloadError, match="cap of 1,000"):
        download_dataset("counterfact-train", tmp_path, url=f"{base_url}/big.json")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("junk", ["[]", "[1, 2, 3]", '[{"unrelated": "record"}]', "{}"])
def test_valid_json_of_the_wrong_layout_is_refused(
    junk: str, base_url: str, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "junk.json").write_text(junk)
    with pytest.raises(DownloadError):
        download_dataset("zsre", tmp_path, url=f"{base_url}/junk.json")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_registered_sources_are_pinned() -> None:
    """Every GitHub source names a commit, not a moving branch."""
    import re

    from seqedit.data.registry import DATASETS

    for spec in DATASETS.values():
        if spec.url and "github" in spec.url:
            assert re.search(r"/[0-9a-f]{40}/", spec.url), spec.url
        assert spec.max_bytes > 0
