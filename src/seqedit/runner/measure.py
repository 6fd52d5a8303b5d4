"""Everything the runner measures, behind one object: norms after every step; activations, norm
profile, edit metrics and downstream ability at checkpoints. Read-only on the model."""

from __future__ import annotations

import random
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from seqedit.data.records import EditRequest
from seqedit.editors.base import EditResult
from seqedit.evaluate.downstream import DownstreamConfig, DownstreamEvaluator
from seqedit.evaluate.edit_metrics import EditEvalConfig, FluencyConfig, evaluate_edits
from seqedit.evaluate.lm_eval import LMEvalConfig, LMEvalEvaluator
from seqedit.evaluate.perplexity import PerplexityConfig, PerplexityEvaluator
from seqedit.models.adapters.base import MatrixInfo
from seqedit.models.loading import LoadedModel
from seqedit.monitor.activations import ActivationMonitor
from seqedit.monitor.norms import NormMonitor
from seqedit.monitor.probes import BUILTIN_PROBE_PROMPTS, build_probe_set
from seqedit.runner.config import ConfigError, RunConfig
from seqedit.settings import get_settings

ZSRE_METRICS = frozenset({"rewrite_acc", "paraphrase_acc", "neighborhood_acc"})
PROBE_CORPUS = "wikitext2-test"  # held out: perplexity is measured on wikitext2-valid
RETENTION_SEED_SALT = 7919  # separates the retention sample's random stream from the run's other seeded draws


def tracked_matrices(lm: LoadedModel, groups: Sequence[str]) -> list[MatrixInfo]:
    """The union of the requested matrix groups, in model order, without duplicates."""
    seen: dict[str, MatrixInfo] = {}
    for group in groups:
        for info in lm.adapter.matrices(group):  # type: ignore[arg-type]
            seen.setdefault(info.path, info)
    return sorted(seen.values(), key=lambda m: (m.layer, m.kind, m.path))


def _corpus_paragraphs(name: str) -> list[str] | None:
    if get_settings().data_dir is None:
        return None
    from seqedit.data import load_text

    try:
        return load_text(name)
    except FileNotFoundError:
        return None


def probe_texts(config: RunConfig, held_out: Sequence[EditRequest]) -> tuple[list[str], str]:
    """Held-out corpus snippets (or, without a data directory, seqedit's built-in probe prompts) plus the
    prompts of facts this run never edits; also says what was used."""
    paragraphs = _corpus_paragraphs(PROBE_CORPUS)
    if paragraphs:
        texts = list(build_probe_set(paragraphs, n_snippets=config.probe.texts, n_prompts=0, seed=config.seed).texts)
        source = f"{len(texts)} {PROBE_CORPUS} snippets"
    else:
        texts = list(BUILTIN_PROBE_PROMPTS[: config.probe.texts])
        source = f"{len(texts)} built-in probe prompts"
    facts = [r.full_prompt for r in held_out[: config.probe.prompts]]
    return texts + facts, f"{source} + {len(facts)} prompts of facts not edited in this run"


class Measurements:
    """Monitors and evaluators of one run, with state that survives a resume."""

    def __init__(
        self,
        lm: LoadedModel,
        config: RunConfig,
        planned: Sequence[EditRequest],
        held_out: Sequence[EditRequest],
        *,
        log: Any = None,
    ) -> None:
        self.lm = lm
        self.config = config
        self.planned = list(planned)
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.norms = NormMonitor(lm.adapter, tracked_matrices(lm, config.track.groups), seed=config.seed)
        ev = config.evaluation
        self.activations: ActivationMonitor | None = None
        self.probe_description = ""
        if ev.activations:
            texts, self.probe_description = probe_texts(config, held_out)
            self.activations = ActivationMonitor(
                lm, texts, layers=config.probe.layers, top_k=config.probe.pca_k, max_length=config.probe.max_tokens
            )
        self.edit_config = EditEvalConfig(
            batch_size=ev.batch_size, fluency=FluencyConfig(enabled=ev.fluency, seed=config.seed)
        )
        self.downstream = self._downstream()
        self.perplexity = self._perplexity()
        self.lm_eval = self._lm_eval()

    # ------------------------------------------------------------------ optional evaluators
    def _downstream(self) -> DownstreamEvaluator | None:
        ev = self.config.evaluation
        if not ev.downstream_tasks:
            return None
        if get_settings().data_dir is None:
            self.log("downstream tasks need SEQEDIT_DATA_DIR (the GLUE/MMLU subsets); not measured")
            return None
        return DownstreamEvaluator(
            DownstreamConfig(
                tasks=tuple(ev.downstream_tasks), n_shots=ev.downstream_shots, n_examples=ev.downstream_examples,
                seed=self.config.seed, batch_size=ev.batch_size,
            )
        )

    def _lm_eval(self) -> LMEvalEvaluator | None:
        spec = self.config.evaluation.lm_eval
        if spec is None:
            return None
        config = LMEvalConfig(tasks=tuple(spec.tasks), num_fewshot=spec.num_fewshot, limit=spec.limit,
                              include_path=spec.include_path, batch_size=spec.batch_size)
        try:
            return LMEvalEvaluator(config)
        except ValueError as exc:  # unknown task names
            raise ConfigError(str(exc)) from exc

    def _perplexity(self) -> PerplexityEvaluator | None:
        ev = self.config.evaluation
        if not ev.perplexity:
            return None
        if get_settings().data_dir is None:
            self.log("perplexity needs SEQEDIT_DATA_DIR (WikiText-2 valid); not measured")
            return None
        return PerplexityEvaluator(PerplexityConfig(max_tokens=ev.perplexity_tokens))

    # ------------------------------------------------------------------ per step
    @staticmethod
    def _stamp(rows: Sequence[Mapping[str, Any]], step: int, n_edits: int) -> list[dict[str, Any]]:
        return [{"step": step, "n_edits": n_edits, **row} for row in rows]

    def start(self) -> list[dict[str, Any]]:
        """Baselines on the unedited model; returns the step-0 norm rows."""
        return self._stamp(self.norms.baseline().rows(), 0, 0)

    def after_step(self, step: int, n_edits: int, result: EditResult) -> list[dict[str, Any]]:
        return self._stamp(self.norms.update(result.deltas).rows(), step, n_edits)

    # ------------------------------------------------------------------ checkpoints
    def _retention_set(self, so_far: Sequence[EditRequest], step: int) -> tuple[list[EditRequest], str]:
        ev = self.config.evaluation
        if ev.retention == "fixed" and len(self.planned) > ev.retention_sample:
            # One sample of the planned stream for the whole run: the same facts are followed from the
            # checkpoint that edits them to the end (at step 0, the whole sample on the unedited model).
            fixed = random.Random(self.config.seed * RETENTION_SEED_SALT).sample(self.planned, ev.retention_sample)
            if step == 0:
                return fixed, "fixed"
            edited = {id(r) for r in so_far}
            return [r for r in fixed if id(r) in edited], "fixed"
        if ev.retention == "sample" and len(so_far) > ev.retention_sample:
            rng = random.Random(self.config.seed * RETENTION_SEED_SALT + step)
            return rng.sample(list(so_far), ev.retention_sample), "sample"
        return list(so_far), "all"

    def _evaluate(self, requests: Sequence[EditRequest], scope: str) -> list[Any]:
        rows = evaluate_edits(self.lm, requests, scope=scope, config=self.edit_config).rows()
        # zsRE is scored by token accuracy (MEND/MEMIT), CounterFact by probability comparison (ROME):
        # keep the family of metrics the papers report for the dataset being edited.
        zsre = all(r.source == "zsre" for r in requests)
        return [r for r in rows if (r["name"] in ZSRE_METRICS) == zsre or r["name"] == "fluency_entropy"]

    def _edit_rows(self, step: int, latest: Sequence[EditRequest], so_far: Sequence[EditRequest]) -> list[Any]:
        if step == 0:
            # The unedited model on every planned edit: what editing has to overcome.
            pool, scope = self._retention_set(self.planned, step)
            return self._evaluate(pool, scope)
        rows = self._evaluate(latest, "latest")
        retention = self.config.evaluation.retention
        if retention == "none":
            return rows
        if len(so_far) == len(latest) and retention != "fixed":  # first batch: "all so far" is the latest batch
            return rows + [{**r, "scope": "all"} for r in rows]
        pool, scope = self._retention_set(so_far, step)
        return rows + (self._evaluate(pool, scope) if pool else [])

    @torch.no_grad()
    def checkpoint(
        self, step: int, n_edits: int, latest: Sequence[EditRequest], so_far: Sequence[EditRequest]
    ) -> list[dict[str, Any]]:
        rows: list[Any] = list(self.norms.profile().rows())
        if self.activations is not None:
            report = self.activations.baseline() if step == 0 else self.activations.measure()
            rows += report.rows()
        if self.config.evaluation.edit_metrics and self.planned:
            rows += self._edit_rows(step, latest, so_far)
        if self.downstream is not None:
            rows += self.downstream.evaluate(self.lm).rows()
        if self.perplexity is not None:
            rows += self.perplexity.evaluate(self.lm).rows()
        if self.lm_eval is not None:
            rows += self.lm_eval.evaluate(self.lm)
        return self._stamp(rows, step, n_edits)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"norms.{k}": v for k, v in self.norms.state_dict().items()}
        if self.activations is not None:
            tensors.update({f"activations.{k}": v for k, v in self.activations.state_dict().items()})
        return tensors, {"probe": self.probe_description}

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.norms.load_state_dict(part("norms."))
        if self.activations is not None:
            self.activations.load_state_dict(part("activations."))
