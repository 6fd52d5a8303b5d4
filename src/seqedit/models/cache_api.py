"""The key/value-cache argument of a transformers model, across versions.

transformers 5.2x renamed the forward argument ``past_key_values=`` (and the output field of the same
name) to ``cache=``; the old spelling warns and is to be removed in 5.40. seqedit supports
``transformers>=4.56``, where only ``past_key_values`` exists, so the name is read from the model's own
forward signature instead of from the version number.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

NEW_NAME = "cache"
OLD_NAME = "past_key_values"


def cache_argument(model: torch.nn.Module) -> str:
    """``"cache"`` where the model's forward takes it, else ``"past_key_values"``."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return OLD_NAME
    return NEW_NAME if NEW_NAME in parameters else OLD_NAME


def with_cache(model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """Keyword arguments that hand ``cache`` to ``model``'s forward (with ``use_cache=True``)."""
    return {cache_argument(model): cache, "use_cache": True}


def output_cache(output: Any) -> Any:
    """The cache a forward returned, read under the current name where the output has it."""
    fields = output.keys() if hasattr(output, "keys") else ()
    if NEW_NAME in fields:
        return output[NEW_NAME]
    if OLD_NAME in fields:
        return output[OLD_NAME]
    return getattr(output, NEW_NAME, None)
