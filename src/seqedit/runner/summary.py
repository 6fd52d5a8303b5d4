"""The key numbers of a finished run (``summary.json``), computed from its recorded rows."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from seqedit import rundir
from seqedit.runner.config import RunConfig
from seqedit.runner.store import RunStore


def _norm_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {}
    last_step = max(r["step"] for r in rows)
    final = [r for r in rows if r["step"] == last_step]
    changed = [r for r in final if r.get("dist_from_init", 0.0) > 0.0]
    unchanged = [r for r in final if r.get("dist_from_init", 0.0) == 0.0]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    out: dict[str, Any] = {
        "changed_matrices": len(changed),
        "tracked_matrices": len(final),
        "changed_fro_rel_mean": mean([r["fro_rel"] for r in changed]),
        "changed_fro_rel_max": max((r["fro_rel"] for r in changed), default=None),
        "changed_dist_from_init_mean": mean([r["dist_from_init"] for r in changed]),
        "unchanged_fro_rel_mean": mean([r["fro_rel"] for r in unchanged]),
    }
    if changed and all(r.get("spectral") is not None for r in changed):
        first = {r["matrix"]: r for r in rows if r["step"] == 0}
        ratios = [r["spectral"] / first[r["matrix"]]["spectral"] for r in changed
                  if r["matrix"] in first and first[r["matrix"]].get("spectral")]
        out["changed_spectral_rel_mean"] = mean(ratios)
    out["per_matrix"] = {r["matrix"]: {"fro": r["fro"], "fro_rel": r["fro_rel"],
                                        "dist_from_init": r["dist_from_init"]} for r in changed}
    return out


def _checkpoint_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Baseline (step 0) and last-checkpoint values of the edit and downstream metrics."""
    wanted = [r for r in rows if r.get("group") in {"edit", "downstream"} and r.get("layer") is None]
    if not wanted:
        return {}
    last_step = max(r["step"] for r in wanted)
    table: dict[str, dict[str, Any]] = defaultdict(dict)
    for r in wanted:
        key = f"{r['group']}/{r['name']}/{r.get('scope') or '-'}"
        if r["step"] == 0:
            table[key]["baseline"] = r["value"]
        if r["step"] == last_step:
            table[key]["final"] = r["value"]
            table[key]["n_edits"] = r["n_edits"]
    for entry in table.values():
        if "baseline" in entry and "final" in entry and entry["baseline"] is not None and entry["final"] is not None:
            entry["change"] = entry["final"] - entry["baseline"]
    return dict(table)


# The editors' one-off phase: key statistics computed (or read from the cache) at the first step.
ONE_OFF_PHASE = "statistics"


def _timing_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per edit *without* the one-off key statistics, which are reported on their own (with
    whether they came from the cache), so the figure means the same on a cold and a warm cache."""
    if not rows:
        return {}
    edits = sum(r["edits_in_step"] for r in rows)
    phases: dict[str, float] = defaultdict(float)
    for r in rows:
        for key, value in r.items():
            if key.startswith("phase_") and value is not None:
                phases[key[len("phase_") : -len("_s")]] += value
    total = sum(r["total_s"] for r in rows)
    one_off = phases.pop(ONE_OFF_PHASE, None)  # None: the method needs no statistics
    flags = [r["statistics_from_cache"] for r in rows if r.get("statistics_from_cache") is not None]
    return {
        "seconds_total": total,
        "seconds_per_edit": (total - (one_off or 0.0)) / max(edits, 1),
        "seconds_per_edit_by_phase": {k: v / max(edits, 1) for k, v in phases.items()},
        "statistics_seconds": one_off,
        # From the first step: later steps reuse the statistics the editor holds in memory.
        "statistics_from_cache": flags[0] if flags else None,
    }


def summarise(
    store: RunStore,
    config: RunConfig,
    *,
    facts: dict[str, Any] | None = None,
    profile: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``facts``: which facts were edited (``RequestSelection.describe``); ``profile``: the settings
    profile used (``ProfileChoice.describe``)."""
    progress = store.read_progress()
    return {
        "label": config.label,
        "model": config.model,
        "method": config.method,
        "profile": profile or {},
        "dataset": config.dataset.name,
        "facts": facts or {},
        "batch_size": config.batch_size,
        "n_edits": progress["n_edits"],
        "steps": progress["completed_steps"],
        "norms": _norm_summary(store.read(rundir.NORMS)),
        "metrics": _checkpoint_summary(store.read(rundir.CHECKPOINTS)),
        "timing": _timing_summary(store.read(rundir.TIMINGS)),
    }
