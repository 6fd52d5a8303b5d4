"""Everything the runner measures, behind one object: norms after every step; activations, norm
profile, edit metrics and downstream ability at checkpoints. Read-only on the model."""

from __future__ import annotations

import random
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from seqedit.data.corpora import (
    WIKITEXT2,
    Corpus,
    TextOverlapError,
    TextSplit,
    check_disjoint,
    parse_split,
    read_split,
    shared_paragraphs,
    statistics_corpus,
)
from seqedit.data.records import EditRequest
from seqedit.editors.base import EditResult
from seqedit.editors.covariance import GENERATED_CORPUS
from seqedit.editors.registry import make_config
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
# text.probes: null, the split of every run made before splits were named (such runs resume with it). The key
# statistics read this split too, so their sample shares paragraphs with the probes (recorded, see TextSpec).
PROBE_SPLIT = TextSplit(WIKITEXT2, "test")
RETENTION_SEED_SALT = 7919  # separates the retention sample's random stream from the run's other seeded draws


def tracked_matrices(lm: LoadedModel, groups: Sequence[str]) -> list[MatrixInfo]:
    """The union of the requested matrix groups, in model order, without duplicates."""
    seen: dict[str, MatrixInfo] = {}
    for group in groups:
        for info in lm.adapter.matrices(group):  # type: ignore[arg-type]
            seen.setdefault(info.path, info)
    return sorted(seen.values(), key=lambda m: (m.layer, m.kind, m.path))


def probe_split(config: RunConfig) -> TextSplit:
    """The split the probe snippets come from (``text.probes``; null: the legacy :data:`PROBE_SPLIT`)."""
    if config.text.probes is None:
        return PROBE_SPLIT
    try:
        return parse_split(config.text.probes, "probes")
    except ValueError as exc:
        raise ConfigError(f"field 'text.probes': {exc}") from exc


def _split_paragraphs(split: TextSplit) -> list[str] | None:
    """The split's paragraphs; None without a data directory or file (probes fall back to built-in prompts)."""
    if split.is_wikitext and get_settings().data_dir is None:
        return None
    try:
        return read_split(split)
    except FileNotFoundError:
        return None


def probe_snippets(config: RunConfig) -> tuple[list[str], str, TextSplit | None]:
    """Held-out corpus snippets (or, without a data directory, seqedit's built-in probe prompts), what they
    are, and the split they come from (None: built-in prompts)."""
    split = probe_split(config)
    paragraphs = _split_paragraphs(split)
    if paragraphs:
        texts = list(build_probe_set(paragraphs, n_snippets=config.probe.texts, n_prompts=0, seed=config.seed).texts)
        return texts, f"{len(texts)} {split.dataset} snippets", split
    texts = list(BUILTIN_PROBE_PROMPTS[: config.probe.texts])
    return texts, f"{len(texts)} built-in probe prompts", None


def probe_texts(config: RunConfig, held_out: Sequence[EditRequest]) -> tuple[list[str], str]:
    """Probe snippets (:func:`probe_snippets`) plus the prompts of facts this run never edits; also says
    what was used."""
    texts, source, _ = probe_snippets(config)
    facts = [r.full_prompt for r in held_out[: config.probe.prompts]]
    return texts + facts, f"{source} + {len(facts)} prompts of facts not edited in this run"


def statistics_text(config: RunConfig, lm: LoadedModel) -> tuple[str, int] | None:
    """The editor's key-statistics corpus setting and sample size; None for methods without key statistics."""
    settings = make_config(config.method, lm, config.hparams, config.profile)
    corpus, n_samples = getattr(settings, "mom2_corpus", None), getattr(settings, "mom2_n_samples", None)
    if not isinstance(corpus, str) or not isinstance(n_samples, int):
        return None
    return corpus, n_samples


def statistics_text_record(config: RunConfig, lm: LoadedModel) -> tuple[dict[str, Any] | None, Corpus | None]:
    """What the editor's key statistics read (None for methods without them) and, for a corpus of
    paragraphs, that corpus (generated text is sampled from the model: no corpus paragraph is in it)."""
    statistics = statistics_text(config, lm)
    if statistics is None:
        return None, None
    corpus_spec, n_samples = statistics
    if corpus_spec == GENERATED_CORPUS:
        return {"split": GENERATED_CORPUS, "paragraphs": n_samples}, None
    with warnings.catch_warnings():  # the editor warns about a missing corpus itself
        warnings.simplefilter("ignore")
        try:
            corpus = statistics_corpus(corpus_spec)
        except ValueError as exc:
            raise ConfigError(f"field 'hparams.mom2_corpus': {exc}") from exc
    return {"split": corpus.split or corpus.name, "paragraphs": n_samples, "fallback": corpus.fallback}, corpus


def check_probe_text(
    config: RunConfig, lm: LoadedModel, snippets: Sequence[str], split: TextSplit | None
) -> dict[str, Any]:
    """What the probes and the key statistics read, and how many probe snippets are statistics paragraphs.
    A named ``text.probes`` split (the default ``wikitext2:valid`` included) that shares any is refused
    (ConfigError); the legacy null is only recorded, so runs started before splits were named resume with the
    same probes."""
    statistics, corpus = statistics_text_record(config, lm)
    probes: dict[str, Any] = {"split": split.name if split else "built-in probe prompts", "snippets": len(snippets),
                              "explicit": config.text.probes is not None}
    if corpus is not None and statistics is not None and split is not None:
        n_samples = int(statistics["paragraphs"])
        probes["shared_with_statistics"] = len(shared_paragraphs(snippets, corpus.sample(n_samples)))
        if probes["shared_with_statistics"] and config.text.probes is not None:
            try:
                check_disjoint(split, snippets, corpus, n_samples)
            except TextOverlapError as exc:
                raise ConfigError(f"field 'text.probes': {exc}") from exc
    return {"probes": probes, "statistics": statistics}


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
        self.text_splits: dict[str, Any] = {}  # which text each measurement reads (recorded with the state)
        if ev.activations:
            snippets, _, split = probe_snippets(config)
            self.text_splits = check_probe_text(config, lm, snippets, split)
            shared = self.text_splits["probes"].get("shared_with_statistics")
            if shared:
                self.log(f"activation probes: {shared} of {len(snippets)} {PROBE_SPLIT.name} snippets are key-statistics "
                         "paragraphs (text.probes: null, the probes of earlier runs); text.probes: wikitext2:valid avoids it")
            texts, self.probe_description = probe_texts(config, held_out)
            self.activations = ActivationMonitor(
                lm, texts, layers=config.probe.layers, top_k=config.probe.pca_k, max_length=config.probe.max_tokens
            )
        else:
            self.text_splits = {"statistics": statistics_text_record(config, lm)[0]}
        self.edit_config = EditEvalConfig(
            batch_size=ev.batch_size, fluency=FluencyConfig(enabled=ev.fluency, seed=config.seed)
        )
        self.downstream = self._downstream()
        self.perplexity = self._perplexity()
        if self.perplexity is not None:
            self.text_splits["perplexity"] = {"split": self.perplexity.split.name, "tokens": ev.perplexity_tokens}
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
        return tensors, {"probe": self.probe_description, "text": self.text_splits}

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.norms.load_state_dict(part("norms."))
        if self.activations is not None:
            self.activations.load_state_dict(part("activations."))
