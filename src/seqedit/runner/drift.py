"""A resumed run is the same experiment, or it is refused with a diff of what changed.

``editor.json``, written when the run starts, records the experiment as resolved: the run config (every
field, overrides applied) and the editor's settings (its per-model defaults with the config's ``hparams``
applied, and the layers a depth-based default resolved to). On resume the config in force (``config.yaml``,
or the config file and ``--set`` overrides given with ``--resume``) is compared with the recorded config,
which catches overrides and hand edits of ``config.yaml`` alike, and the editor resolved now is compared with
the recorded settings, which catches a changed per-model default in a newer seqedit.

What may change on resume (``SAFE_ON_RESUME``, see docs/design.md "Resume"): ``name`` (a report label),
``checkpoints`` (when to measure from now on; measurements already made are kept), ``trackers`` (where results are mirrored) and ``health`` (the
divergence and collapse thresholds, re-read from the recorded rows on resume). Nothing else: the fact
stream, the probes, the editor, the evaluation and the seed all shape rows that are already written, and
``num_edits`` decides which held-out facts are the activation probes (the facts after the last edit) and
which facts form a fixed retention sample, so a run cannot be extended without changing its past.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from seqedit import rundir
from seqedit.editors.base import Editor
from seqedit.models.loading import LoadedModel
from seqedit.runner.config import ConfigError, RunConfig, config_to_yaml, load_config
from seqedit.utils.io import json_default, write_json_atomic, write_text_atomic

EDITOR_FILE = rundir.EDITOR
SAFE_ON_RESUME = frozenset({"name", "checkpoints", "health", "trackers", "output_dir"})
# Fields added after runs had started, with the value a run that predates them ran with. Their defaults
# for new runs differ (text.probes reads wikitext2:valid now), so a run recorded without the field resumes
# with this value: the experiment it began.
LEGACY_VALUES: dict[str, dict[str, Any]] = {"text": {"probes": None}}
MAX_LISTED = 12


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if isinstance(data, Mapping) and (data or not prefix):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def diff(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted field -> (stored value, requested value) for every field that differs (missing: None)."""
    old, new = flatten(stored), flatten(requested)
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def describe(changes: Mapping[str, tuple[Any, Any]]) -> str:
    items = [f"{k}: {json.dumps(a, default=json_default)} -> {json.dumps(b, default=json_default)}"
             for k, (a, b) in list(changes.items())[:MAX_LISTED]]
    more = f" (and {len(changes) - MAX_LISTED} more)" if len(changes) > MAX_LISTED else ""
    return "; ".join(items) + more


def _top_field(dotted: str) -> str:
    return dotted.split(".", 1)[0]


def _read_record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / EDITOR_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); restore it or start a new run") from exc
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: expected a JSON object; restore it or start a new run")
    return record


def check_config_on_resume(config_path: Path, requested: RunConfig) -> RunConfig:
    """The config a resumed run continues with: ``requested``, with :data:`LEGACY_VALUES` for the fields the
    run was started without. Refused (ConfigError) when it differs from the recorded config in anything but
    ``SAFE_ON_RESUME``; the safe changes are recorded (``config.yaml`` and ``editor.json``) so the next resume
    compares against them."""
    record = _read_record(config_path.parent)
    stored = load_config(config_path)
    recorded = (record or {}).get("config") or _read_mapping(config_path)
    legacy = {field: value for field, value in LEGACY_VALUES.items() if field not in recorded}
    started = {**((record or {}).get("config") or stored.model_dump(mode="json")), **legacy}
    # An explicit value for such a field stays, and is refused below if it is not the legacy one.
    implicit = {field: value for field, value in legacy.items() if field not in requested.model_fields_set}
    if implicit:
        requested = RunConfig.model_validate({**requested.model_dump(mode="json"), **implicit})
    now = requested.model_dump(mode="json", exclude={"output_dir"})
    # A field seqedit gained after the run started was not recorded: nothing to compare it with.
    changes = {k: v for k, v in diff({k: started[k] for k in now if k in started}, now).items()
               if _top_field(k) in started}
    unsafe = {k: v for k, v in changes.items() if _top_field(k) not in SAFE_ON_RESUME}
    if unsafe:
        raise ConfigError(
            f"{config_path}: the resumed run would be a different experiment ({describe(unsafe)}); only "
            f"{', '.join(sorted(SAFE_ON_RESUME - {'output_dir'}))} may change on resume. Start a new run "
            "with another output_dir for the changed experiment"
        )
    if changes or stored.model_dump(mode="json", exclude={"output_dir"}) != now:
        write_text_atomic(config_path, config_to_yaml(requested.model_copy(update={"output_dir": stored.output_dir})))
        if record is not None:
            write_json_atomic(config_path.parent / EDITOR_FILE, {**record, "config": requested.model_dump(mode="json")})
    return requested


def _read_mapping(path: Path) -> dict[str, Any]:
    """The top-level fields ``config.yaml`` holds as written (a field it lacks predates its seqedit)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def resolved_settings(method: str, editor: Editor, lm: LoadedModel | None = None) -> dict[str, Any]:
    """What ``editor.json`` records: the method, the editor class, every resolved setting and, for
    locate-and-edit methods whose ``layers`` default to the model's depth, the layers that means."""
    cls = type(editor)
    out: dict[str, Any] = {
        "method": method,
        "editor_class": f"{cls.__module__}:{cls.__qualname__}",
        "settings": editor.config.model_dump(mode="json"),
    }
    resolve = getattr(editor, "resolve_layers", None)
    if lm is not None and resolve is not None:
        out["edited_layers"] = list(resolve(lm))
    return out


def record_editor(
    run_dir: Path, method: str, editor: Editor, lm: LoadedModel | None = None, config: RunConfig | None = None
) -> None:
    """Write ``editor.json``: the editor's resolved settings and the run config as started."""
    record = resolved_settings(method, editor, lm)
    if config is not None:
        record["config"] = config.model_dump(mode="json")
    write_json_atomic(run_dir / EDITOR_FILE, record)


def check_editor_on_resume(
    run_dir: Path, method: str, editor: Editor, log: Any = None, lm: LoadedModel | None = None
) -> None:
    """The editor resolved now must have the settings recorded at the start (runs older than
    ``editor.json`` get one, written now, with a note)."""
    path = run_dir / EDITOR_FILE
    now = resolved_settings(method, editor, lm)
    recorded = _read_record(run_dir)
    if recorded is None:
        record_editor(run_dir, method, editor, lm)
        if log is not None:
            log(f"{run_dir}: no {EDITOR_FILE} (a run started before it was recorded); wrote today's resolved "
                "settings, which cannot be checked against the start")
        return
    changes = diff({k: v for k, v in recorded.items() if k != "config"}, now)
    if changes:
        raise ConfigError(
            f"{path}: the editor's resolved settings changed since the run started ({describe(changes)}); "
            "a changed per-model default would mix two experiments in one run. Resume with the seqedit "
            "version that started it (environment.json) or start a new run"
        )
