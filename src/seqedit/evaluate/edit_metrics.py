"""Edit metrics as ROME, MEMIT and MEND define them, measured on a list of :class:`EditRequest` s.

Probabilities of multi-token targets follow ROME (``test_batch_prediction``): a target's score on a
prompt is its mean per-token log-probability under teacher forcing, i.e. minus the mean NLL per token,
and two targets are compared by that score. ``p̄ = exp(mean log-prob)`` is the per-token geometric-mean
probability.

CounterFact (ROME §4.2, MEMIT §5.2), for requests that know their true answer (``target_true``):

* ``efficacy_score`` (ES) -- fraction of edit prompts with ``p̄(new) > p̄(true)``;
  ``efficacy_magnitude`` -- mean ``p̄(new) − p̄(true)``.
* ``paraphrase_score`` (PS) / ``paraphrase_magnitude`` -- the same on the paraphrase prompts.
* ``neighborhood_score`` (NS) -- fraction of neighbourhood prompts with ``p̄(true) > p̄(new)``, where
  ``true`` is the neighbourhood prompt's own answer; ``neighborhood_magnitude`` -- mean
  ``p̄(true) − p̄(new)``.
* ``score`` -- harmonic mean of ES, PS and NS (MEMIT's "Score").

Teacher-forced top-1 (for every request): ``efficacy_top1`` / ``paraphrase_top1`` -- fraction of
prompts on which every token of ``target_new`` is the argmax; ``neighborhood_top1`` -- the same for
the neighbourhood prompt's own answer.

zsRE token accuracy (MEND; MEMIT ``compute_rewrite_quality_zsre``), for every request:
``rewrite_acc`` / ``paraphrase_acc`` -- fraction of ``target_new`` tokens whose teacher-forced argmax is
right; ``neighborhood_acc`` -- the same for the neighbourhood answer (for zsRE the NQ answer).

Aggregation as in ROME's ``summarize.py``: a metric is first averaged over one request's prompts (token
accuracies pool that request's target tokens), then over requests; requests without paraphrase or
neighbourhood prompts do not enter those metrics.

``fluency_entropy`` -- ROME's generation n-gram entropy (:mod:`seqedit.evaluate.fluency`) on the
requests' ``generation_prompts``; a request without any (the EasyEdit layout has none) contributes its
edit prompt instead, and the row's definition says so.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from seqedit.data.records import EditRequest
from seqedit.evaluate.fluency import GenerationSettings, fluency_entropy
from seqedit.evaluate.scoring import TargetScores, score_targets
from seqedit.models.loading import LoadedModel
from seqedit.utils.rows import CheckpointRow, checkpoint_row

_COMPARE = "mean token log-prob (ROME)"
DEFINITIONS: dict[str, str] = {
    "efficacy_score": f"prob_compare:new>true on edit prompt; {_COMPARE}",
    "efficacy_magnitude": f"mean(p̄(new)-p̄(true)) on edit prompt; p̄=exp({_COMPARE})",
    "paraphrase_score": f"prob_compare:new>true on paraphrase prompts; {_COMPARE}",
    "paraphrase_magnitude": f"mean(p̄(new)-p̄(true)) on paraphrase prompts; p̄=exp({_COMPARE})",
    "neighborhood_score": f"prob_compare:true>new on neighborhood prompts; {_COMPARE}",
    "neighborhood_magnitude": f"mean(p̄(true)-p̄(new)) on neighborhood prompts; p̄=exp({_COMPARE})",
    "score": "hmean(efficacy_score, paraphrase_score, neighborhood_score) (MEMIT)",
    "efficacy_top1": "teacher-forced argmax hits every target_new token, edit prompt",
    "paraphrase_top1": "teacher-forced argmax hits every target_new token, paraphrase prompts",
    "neighborhood_top1": "teacher-forced argmax hits every token of the neighbor's own answer",
    "rewrite_acc": "teacher-forced token accuracy of target_new, edit prompt (MEND/MEMIT zsRE)",
    "paraphrase_acc": "teacher-forced token accuracy of target_new, paraphrase prompts (MEND/MEMIT zsRE)",
    "neighborhood_acc": "teacher-forced token accuracy of the neighbor's own answer (MEND/MEMIT zsRE)",
}
METRIC_ORDER: tuple[str, ...] = (*DEFINITIONS, "fluency_entropy")


class FluencyConfig(BaseModel):
    """Fluency generation; ROME's defaults (top-5 sampling, 100 tokens including the prompt)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_requests: int | None = Field(
        default=20,
        description="Requests whose prompts are generated from (seeded sample; ~2 s each on a laptop CPU "
        "for SmolLM2-135M).",
    )
    max_length: int = 100
    top_k: int = 5
    do_sample: bool = True
    seed: int = 0
    batch_size: int = 16


class EditEvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=32, ge=1, description="Prompt-target rows per forward pass.")
    fluency: FluencyConfig = Field(default_factory=FluencyConfig)


@dataclass(frozen=True)
class EditMetrics:
    """Edit metrics of one scope; ``counts`` says how many requests entered each metric."""

    scope: str
    values: dict[str, float]
    counts: dict[str, int]
    definitions: dict[str, str]
    per_request: list[dict[str, Any]] = field(default_factory=list, repr=False)
    generations: list[list[str]] = field(default_factory=list, repr=False)

    def rows(self) -> list[CheckpointRow]:
        return [
            checkpoint_row(
                "edit", name, self.values[name], scope=self.scope, definition=self.definitions[name]
            )
            for name in METRIC_ORDER
            if name in self.values
        ]


@dataclass
class _Rows:
    """Prompt-target rows to score, with where each belongs."""

    prompts: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    owner: list[tuple[int, str]] = field(default_factory=list)  # (request index, role)

    def add(self, request: int, role: str, prompt: str, target: str) -> None:
        self.prompts.append(prompt)
        self.targets.append(target)
        self.owner.append((request, role))


def _collect_rows(requests: Sequence[EditRequest]) -> _Rows:
    rows = _Rows()
    for i, r in enumerate(requests):
        for kind, prompts in (("edit", [r.full_prompt]), ("para", list(r.paraphrase_prompts))):
            for prompt in prompts:
                rows.add(i, f"{kind}:new", prompt, r.target_new)
                if r.target_true is not None:
                    rows.add(i, f"{kind}:true", prompt, r.target_true)
        for neighbor in r.neighborhood:
            rows.add(i, "neigh:true", neighbor.prompt, neighbor.target)
            if r.target_true is not None:
                rows.add(i, "neigh:new", neighbor.prompt, r.target_new)
    return rows


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _request_metrics(scores: TargetScores, idx: dict[str, list[int]], comparative: bool) -> dict[str, float]:
    """One request's metrics from the indices of its scored rows per role."""
    out: dict[str, float] = {}
    pairs = (("edit", "efficacy", "rewrite"), ("para", "paraphrase", "paraphrase"))
    for kind, name, acc_name in pairs:
        new = idx.get(f"{kind}:new", [])
        if not new:
            continue
        out[f"{name}_top1"] = float(scores.all_correct[new].double().mean())
        out[f"{acc_name}_acc"] = float(scores.hits[new].sum() / scores.lengths[new].sum())
        if comparative:
            lp_new, lp_true = scores.mean_log_prob[new], scores.mean_log_prob[idx[f"{kind}:true"]]
            out[f"{name}_score"] = float((lp_new > lp_true).double().mean())
            out[f"{name}_magnitude"] = float((lp_new.exp() - lp_true.exp()).mean())
    true = idx.get("neigh:true", [])
    if true:
        out["neighborhood_top1"] = float(scores.all_correct[true].double().mean())
        out["neighborhood_acc"] = float(scores.hits[true].sum() / scores.lengths[true].sum())
        if comparative:
            lp_true, lp_new = scores.mean_log_prob[true], scores.mean_log_prob[idx["neigh:new"]]
            out["neighborhood_score"] = float((lp_true > lp_new).double().mean())
            out["neighborhood_magnitude"] = float((lp_true.exp() - lp_new.exp()).mean())
    return out


def harmonic_mean(values: Sequence[float]) -> float:
    if any(v < 0 for v in values):
        raise ValueError("the harmonic mean needs non-negative values")
    if any(v == 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def _fluency_prompts(requests: Sequence[EditRequest], config: FluencyConfig) -> tuple[list[list[str]], str]:
    chosen = list(range(len(requests)))
    if config.max_requests is not None and len(chosen) > config.max_requests:
        chosen = sorted(random.Random(config.seed).sample(chosen, config.max_requests))
    prompts, fallback = [], 0
    for i in chosen:
        r = requests[i]
        if r.generation_prompts:
            prompts.append(list(r.generation_prompts))
        else:
            prompts.append([r.full_prompt])
            fallback += 1
    source = (
        "generation_prompts" if fallback == 0 else ("edit_prompt" if fallback == len(chosen) else "mixed")
    )
    return prompts, source


def evaluate_edits(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    *,
    scope: str = "latest",
    config: EditEvalConfig | None = None,
    show_progress: bool = False,
) -> EditMetrics:
    """Score the model on ``requests`` (the caller decides which: latest batch, all so far, a sample)."""
    config = config or EditEvalConfig()
    if not requests:
        raise ValueError("evaluate_edits needs at least one request")
    rows = _collect_rows(requests)
    scores = score_targets(
        lm,
        rows.prompts,
        rows.targets,
        batch_size=config.batch_size,
        show_progress=show_progress,
        desc="edit metrics",
    )
    indices: list[dict[str, list[int]]] = [{} for _ in requests]
    for row, (request, role) in enumerate(rows.owner):
        indices[request].setdefault(role, []).append(row)
    per_request: list[dict[str, Any]] = []
    for r, idx in zip(requests, indices, strict=True):
        metrics = _request_metrics(scores, idx, comparative=r.target_true is not None)
        per_request.append({"case_id": r.case_id, **metrics})
    values: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name in DEFINITIONS:
        present = [m[name] for m in per_request if name in m]
        if present:
            values[name], counts[name] = _mean(present), len(present)
    if all(k in values for k in ("efficacy_score", "paraphrase_score", "neighborhood_score")):
        values["score"] = harmonic_mean(
            [values[k] for k in ("efficacy_score", "paraphrase_score", "neighborhood_score")]
        )
        counts["score"] = min(counts[k] for k in ("efficacy_score", "paraphrase_score", "neighborhood_score"))
    definitions = {k: v for k, v in DEFINITIONS.items() if k in values}
    generations: list[list[str]] = []
    if config.fluency.enabled:
        prompts, source = _fluency_prompts(requests, config.fluency)
        settings = GenerationSettings(
            max_length=config.fluency.max_length,
            top_k=config.fluency.top_k,
            do_sample=config.fluency.do_sample,
            seed=config.fluency.seed,
            batch_size=config.fluency.batch_size,
        )
        values["fluency_entropy"], generations = fluency_entropy(
            lm, prompts, settings, show_progress=show_progress
        )
        counts["fluency_entropy"] = len(prompts)
        definitions["fluency_entropy"] = (
            f"ngram_entropy(ROME): mean (2/3·H2+4/3·H3)/2 bits; prompts={source}; {settings.describe()}"
        )
    return EditMetrics(scope, values, counts, definitions, per_request, generations)
