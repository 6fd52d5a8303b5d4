"""Names that become path components (a model name under a cache folder) made safe, in one place."""

from __future__ import annotations

import hashlib
import re

MAX_COMPONENT_CHARS = 120


def safe_path_component(name: str, fallback: str = "model") -> str:
    """``name`` as one path component that stays inside its parent folder.

    Characters other than letters, digits, ``_ . -`` become ``_`` (so ``/`` and ``\\`` cannot add levels),
    leading and trailing ``_`` and ``.`` are dropped (so ``..`` and ``.`` cannot climb or alias the folder;
    an empty result becomes ``fallback``), and an over-long name is shortened with a hash of the original
    (so two long names stay distinct). Ordinary names are unchanged: ``smollm2-135m``; a hub id
    ``HuggingFaceTB/SmolLM2-135M`` becomes ``HuggingFaceTB_SmolLM2-135M``.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or fallback
    if len(cleaned) > MAX_COMPONENT_CHARS:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
        cleaned = f"{cleaned[: MAX_COMPONENT_CHARS - 13]}-{digest}"
    return cleaned
