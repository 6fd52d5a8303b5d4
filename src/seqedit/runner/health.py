"""The run's health: divergence (a blow-up to stop or flag) and collapse (the model stops working), both
read from the rows the run records, so a resumed run, a finished run and a run re-read from disk all agree.

**Divergence** is a fault of the run (a too-large step, NaN/Inf, an edit that changed nothing), checked after
every step. Each check has an action: ``stop`` (the run ends with status ``failed`` and the reason; its rows
so far are kept, summarised and mirrored to Parquet), ``flag`` (recorded in ``health.json`` and
``summary.json``, the run goes on) or ``off``.

**Collapse** is the finding the seed paper predicts (Gupta et al. 2025): the model itself breaks down. Each
named criterion records the first step (and edit count) at which the model meets it; ``stop_on_collapse``
ends the run there with status ``finished`` and the criterion as reason. Criteria and defaults:

* ``perplexity``: perplexity at a checkpoint >= ``perplexity_ratio`` (2) x the unedited model's;
* ``efficacy``: efficacy of the latest batch (``efficacy_score``, or ``rewrite_acc`` on zsRE) below
  ``efficacy_below`` (.5) at ``efficacy_checkpoints`` (2) consecutive checkpoints;
* ``norm_growth``: ``‖W‖/‖W₀‖`` of any edited matrix above ``fro_rel_limit`` (2);
* ``non_finite``: a NaN or infinite norm or metric.

Divergence checks: ``step_change`` (one step moved a matrix by more than ``step_change_limit`` x ‖W₀‖),
``non_finite`` and ``no_op_edit`` (no matrix moved by more than ``no_op_limit`` x ‖W₀‖: float32 rounding,
e.g. a target optimisation that ended at δ = 0).

Rows hold ``null`` for non-finite numbers, with the field names listed under ``non_finite``
(:func:`seqedit.utils.io.finite_row`), so that is what the checks read too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CheckAction = Literal["stop", "flag", "off"]
EFFICACY_METRICS = ("efficacy_score", "rewrite_acc")
COLLAPSE_CRITERIA = ("perplexity", "efficacy", "norm_growth", "non_finite")


class DivergenceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    step_change_limit: float = Field(
        default=0.5, gt=0, description="Largest allowed ‖ΔW‖/‖W₀‖ of any matrix in one step (a blow-up beyond it)."
    )
    step_change: CheckAction = Field(default="stop", description="What to do when a step changes a matrix more.")
    non_finite: CheckAction = Field(default="stop", description="What to do on a NaN or infinite norm or metric.")
    no_op_edit: CheckAction = Field(
        default="flag", description="What to do when a step changed no tracked matrix beyond no_op_limit."
    )
    no_op_limit: float = Field(
        default=1e-7, ge=0, description="A step whose largest ‖ΔW‖/‖W₀‖ is at most this changed nothing (float32 "
        "rounding is 6e-8 of a weight; a target optimisation that failed to δ = 0 leaves ~1e-8).",
    )


class CollapseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    perplexity_ratio: float | None = Field(default=2.0, gt=1, description="Collapse: perplexity >= this x the unedited; null: off.")
    efficacy_below: float | None = Field(
        default=0.5, gt=0, le=1, description="Collapse: latest-batch efficacy below this; null: off."
    )
    efficacy_checkpoints: int = Field(default=2, ge=1, description="How many consecutive checkpoints the efficacy must be low.")
    fro_rel_limit: float | None = Field(default=2.0, gt=1, description="Collapse: ‖W‖/‖W₀‖ of an edited matrix above this; null: off.")
    non_finite: bool = Field(default=True, description="Collapse: a NaN or infinite norm or metric.")


class HealthSpec(BaseModel):
    """Divergence checks and collapse criteria of a run (runner/health.py)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    divergence: DivergenceSpec = Field(
        default_factory=DivergenceSpec, description="Blow-up checks after every step, each stop, flag or off."
    )
    collapse: CollapseSpec = Field(
        default_factory=CollapseSpec, description="Collapse criteria: the first step each is met is recorded."
    )
    stop_on_collapse: bool = Field(default=False, description="End the run (status finished) when any collapse criterion is met.")


def _bad(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _non_finite_fields(row: Mapping[str, Any]) -> list[str]:
    listed = list(row.get("non_finite") or [])
    return listed + [k for k, v in row.items() if _bad(v) and k not in listed]


@dataclass
class HealthEvent:
    kind: str  # "divergence" or "collapse"
    check: str  # e.g. "step_change", "perplexity"
    step: int
    n_edits: int
    value: float | None
    action: str  # "stop", "flag"
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "check": self.check, "step": self.step, "n_edits": self.n_edits,
                "value": self.value, "action": self.action, "detail": self.detail}


@dataclass
class HealthMonitor:
    """Feeds on the run's rows in order; says when to stop and what to record."""

    spec: HealthSpec
    collapse: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    events: list[HealthEvent] = field(default_factory=list)
    _baseline_perplexity: float | None = None
    _low_efficacy_streak: int = 0

    def __post_init__(self) -> None:
        self.collapse = {name: None for name in COLLAPSE_CRITERIA}

    # ------------------------------------------------------------------ feeding
    def observe_norms(self, step: int, n_edits: int, rows: Iterable[Mapping[str, Any]]) -> list[HealthEvent]:
        rows = list(rows)
        if step == 0:
            return []
        found: list[HealthEvent] = []
        div = self.spec.divergence
        broken = [(r["matrix"], f) for r in rows for f in _non_finite_fields(r)]
        if broken:
            detail = f"non-finite {broken[0][1]} of {broken[0][0]}" + (f" (+{len(broken) - 1} more)" if len(broken) > 1 else "")
            found += self._divergence("non_finite", div.non_finite, step, n_edits, None, detail)
            found += self._collapse("non_finite", self.spec.collapse.non_finite, step, n_edits, None, detail)
        finite = [r for r in rows if not _non_finite_fields(r)]
        changes = [(r["step_delta_fro"] / r["fro0"], r["matrix"]) for r in finite if r.get("fro0")]
        if changes:
            worst, matrix = max(changes)
            if worst > div.step_change_limit:
                found += self._divergence("step_change", div.step_change, step, n_edits, worst,
                                          f"{matrix} changed by {worst:.3g} x ‖W₀‖ in one step "
                                          f"(limit {div.step_change_limit:g})")
        largest = max((change for change, _ in changes), default=0.0)
        if rows and len(finite) == len(rows) and largest <= div.no_op_limit:
            found += self._divergence("no_op_edit", div.no_op_edit, step, n_edits, largest,
                                      f"the step changed no tracked matrix (largest ‖ΔW‖/‖W₀‖ {largest:.2g} "
                                      f"<= {div.no_op_limit:g})")
        limit = self.spec.collapse.fro_rel_limit
        edited = [(r["fro_rel"], r["matrix"]) for r in finite if r.get("edited") and r.get("fro_rel") is not None]
        if limit is not None and edited:
            top, matrix = max(edited)
            if top > limit:
                found += self._collapse("norm_growth", True, step, n_edits, top,
                                        f"‖W‖/‖W₀‖ of {matrix} is {top:.4g} (> {limit:g})")
        return found

    def observe_checkpoint(self, step: int, n_edits: int, rows: Iterable[Mapping[str, Any]]) -> list[HealthEvent]:
        rows = list(rows)
        found: list[HealthEvent] = []
        spec = self.spec.collapse
        broken = [r for r in rows if _non_finite_fields(r)]
        if broken and step > 0:
            detail = f"non-finite {broken[0].get('group')}/{broken[0].get('name')} at a checkpoint"
            found += self._divergence("non_finite", self.spec.divergence.non_finite, step, n_edits, None, detail)
            found += self._collapse("non_finite", spec.non_finite, step, n_edits, None, detail)
        ppl = [r["value"] for r in rows if r.get("name") == "perplexity" and r.get("value") is not None]
        if ppl:
            if step == 0:
                self._baseline_perplexity = ppl[0]
            elif spec.perplexity_ratio is not None and self._baseline_perplexity:
                ratio = ppl[0] / self._baseline_perplexity
                if ratio >= spec.perplexity_ratio:
                    found += self._collapse("perplexity", True, step, n_edits, ratio,
                                            f"perplexity {ppl[0]:.4g} is {ratio:.3g} x the unedited model's")
        efficacy = [r["value"] for r in rows if r.get("group") == "edit" and r.get("scope") == "latest"
                    and r.get("name") in EFFICACY_METRICS and r.get("value") is not None]
        if efficacy and step > 0 and spec.efficacy_below is not None:
            self._low_efficacy_streak = self._low_efficacy_streak + 1 if efficacy[0] < spec.efficacy_below else 0
            if self._low_efficacy_streak >= spec.efficacy_checkpoints:
                found += self._collapse("efficacy", True, step, n_edits, efficacy[0],
                                        f"latest-batch efficacy {efficacy[0]:.3g} < {spec.efficacy_below:g} at "
                                        f"{self._low_efficacy_streak} consecutive checkpoints")
        return found

    def replay(self, norms: Iterable[Mapping[str, Any]], checkpoints: Iterable[Mapping[str, Any]]) -> None:
        """Rebuild the state from recorded rows (a resumed run), in step order, checkpoints after norms."""
        by_step: dict[int, dict[str, list[Mapping[str, Any]]]] = {}
        for table, rows in (("norms", norms), ("checkpoints", checkpoints)):
            for row in rows:
                by_step.setdefault(int(row["step"]), {"norms": [], "checkpoints": []})[table].append(row)
        for step in sorted(by_step):
            tables = by_step[step]
            n_edits = int((tables["norms"] or tables["checkpoints"])[0].get("n_edits", 0))
            self.observe_norms(step, n_edits, tables["norms"])
            if tables["checkpoints"]:
                self.observe_checkpoint(step, n_edits, tables["checkpoints"])

    # ------------------------------------------------------------------ decisions
    def _divergence(
        self, check: str, action: CheckAction, step: int, n_edits: int, value: float | None, detail: str
    ) -> list[HealthEvent]:
        if action == "off":
            return []
        event = HealthEvent("divergence", check, step, n_edits, value, action, detail)
        self.events.append(event)
        return [event]

    def _collapse(
        self, criterion: str, enabled: bool, step: int, n_edits: int, value: float | None, detail: str
    ) -> list[HealthEvent]:
        if not enabled or self.collapse.get(criterion) is not None:
            return []  # only the first time a criterion is met is recorded
        self.collapse[criterion] = {"step": step, "n_edits": n_edits, "value": value, "detail": detail}
        event = HealthEvent("collapse", criterion, step, n_edits, value,
                            "stop" if self.spec.stop_on_collapse else "flag", detail)
        self.events.append(event)
        return [event]

    @staticmethod
    def stopping(events: Iterable[HealthEvent]) -> HealthEvent | None:
        """The first event that ends the run, if any."""
        return next((e for e in events if e.action == "stop"), None)

    def report(self) -> dict[str, Any]:
        """What ``health.json`` and ``summary.json`` record."""
        divergence = [e.as_dict() for e in self.events if e.kind == "divergence"]
        return {
            "collapse": {name: (dict(hit) if hit is not None else None) for name, hit in self.collapse.items()},
            "divergence": divergence[:100],
            "divergence_count": len(divergence),
            "flags": sorted({f"{e.kind}:{e.check}" for e in self.events}),
            "criteria": self.spec.model_dump(mode="json"),
        }
