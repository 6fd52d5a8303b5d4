"""Editors by name. The table maps names to import paths (loaded lazily, so a missing optional
dependency of one editor does not break the others); third-party editors register through the
``seqedit.editors`` entry-point group."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from seqedit.editors.base import Editor, EditorConfig
from seqedit.models.loading import LoadedModel

BUILTIN_EDITORS: dict[str, str] = {
    # name -> "module:Class"
    "rome": "seqedit.editors.rome:ROME",
    "memit": "seqedit.editors.memit:MEMIT",
    "emmet": "seqedit.editors.emmet:EMMET",
    "alphaedit": "seqedit.editors.alphaedit:AlphaEdit",
    "encore": "seqedit.editors.encore:ENCORE",
    "ft-l": "seqedit.editors.finetune:FTLEditor",
    "ft": "seqedit.editors.finetune:FineTuneEditor",
    "lora": "seqedit.editors.lora:LoRAEditor",
    "mend": "seqedit.editors.mend.editor:MendEditor",
    "ultraedit": "seqedit.editors.ultraedit:UltraEdit",
}


def _table() -> dict[str, str]:
    table = dict(BUILTIN_EDITORS)
    for ep in entry_points(group="seqedit.editors"):
        table.setdefault(ep.name, ep.value)
    return table


def editor_names() -> list[str]:
    return sorted(_table())


def editor_class(name: str) -> type[Editor]:
    table = _table()
    key = name.lower()
    if key not in table:
        raise ValueError(f"unknown editing method '{name}'; available: {', '.join(sorted(table))}")
    module_name, _, class_name = table[key].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Editor)):
        raise TypeError(f"{table[key]} is not an Editor subclass")
    return cls


def make_config(
    name: str, lm: LoadedModel | None = None, overrides: dict[str, Any] | None = None, profile: str | None = None
) -> EditorConfig:
    """The method's defaults for ``lm`` under ``profile`` (None: the model's own profile), updated with
    ``overrides`` (validated: unknown keys are errors)."""
    cls = editor_class(name)
    base = cls.default_config(lm, profile)
    merged = {**base.model_dump(), **(overrides or {})}
    return cls.config_class.model_validate(merged)


def create_editor(
    name: str, lm: LoadedModel | None = None, overrides: dict[str, Any] | None = None, profile: str | None = None
) -> Editor:
    cls = editor_class(name)
    return cls(make_config(name, lm, overrides, profile))


# Profiles shown by ``seqedit methods NAME``: every model profile, and the reproduction profile on SmolLM2.
SHOWN_PROFILES = ("generic", "smollm2", "llama3-8b", "gpt2-xl", "smollm2+released")


def describe_methods() -> dict[str, dict[str, Any]]:
    """Per registered method: description, intended batch mode, and per profile (:data:`SHOWN_PROFILES`)
    the default settings (``defaults``) and, for the fields the profile sets, where each value came from
    (``sources``; the other fields are the class defaults, described in the config's field descriptions).
    ``layers: None`` means chosen from the model's depth."""
    from seqedit.editors.profiles import choose_profile, settings_for

    out: dict[str, dict[str, Any]] = {}
    for name in editor_names():
        try:
            cls = editor_class(name)
        except (ImportError, AttributeError, TypeError) as exc:
            out[name] = {"description": f"unavailable: {exc}", "batch_mode": None, "defaults": {}, "sources": {}}
            continue
        defaults: dict[str, dict[str, Any]] = {}
        sources: dict[str, dict[str, str]] = {}
        for shown in SHOWN_PROFILES:
            choice = choose_profile(shown, None)
            defaults[shown] = cls.config_class.model_validate(cls.profile_defaults(choice)).model_dump(mode="json")
            settings = settings_for(choice, cls.name, cls.config_class.model_fields, cls.profile_group)
            sources[shown] = {field: setting.source for field, setting in settings.items()}
        out[name] = {
            "description": cls.description,
            "batch_mode": cls.intended_batch_mode,
            "defaults": defaults,
            "sources": sources,
        }
    return out


def describe_stabilisers() -> dict[str, dict[str, Any]]:
    """The stabiliser options of the locate-and-edit methods: field -> default and description."""
    from seqedit.editors.stabilisers import StabiliserSettings

    return {
        name: {"default": field.default, "description": field.description or ""}
        for name, field in StabiliserSettings.model_fields.items()
    }
