"""Standard downstream tasks through lm-evaluation-harness (``pip install "seqedit[lm-eval]"``).

The harness evaluates the in-memory model as it is at a checkpoint (``HFLM`` wraps the loaded model and
tokenizer; nothing is saved or reloaded). Results become ``downstream`` rows: name ``<task>_<metric>``
(``arc_easy_acc``, ``arc_easy_acc_norm``), scope the task, and a definition naming the harness version,
the task's version, the shots, the example limit and the filter. Tasks come from the harness's registry
or from ``include_path`` (a directory of task YAML files, e.g. over a local JSON file: no hub access).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seqedit.models.loading import LoadedModel


@dataclass(frozen=True)
class LMEvalConfig:
    """Which lm-evaluation-harness tasks to run (the run config's ``evaluation.lm_eval`` describes them)."""

    tasks: tuple[str, ...]
    num_fewshot: int | None = None
    limit: int | None = 100
    include_path: str | None = None
    batch_size: int = 8


def lm_eval_available() -> bool:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return False
    return True


class LMEvalEvaluator:
    """Runs the configured tasks on a model; task definitions are loaded once."""

    def __init__(self, config: LMEvalConfig) -> None:
        if not lm_eval_available():
            raise ImportError('evaluation.lm_eval needs lm-evaluation-harness: pip install "seqedit[lm-eval]"')
        from lm_eval.tasks import TaskManager

        self.config = config
        # Indexing the harness's own task folder takes minutes on a slow CPU: skip it when local tasks suffice.
        self.task_manager = TaskManager(include_path=config.include_path, include_defaults=False) if config.include_path else None
        if self.task_manager is None or not set(config.tasks) <= set(self.task_manager.all_tasks):
            self.task_manager = TaskManager(include_path=config.include_path)
        unknown = [t for t in config.tasks if t not in self.task_manager.all_tasks]
        if unknown:
            raise ValueError(f"evaluation.lm_eval.tasks: unknown task(s) {unknown} (lm-evaluation-harness)")

    def evaluate(self, lm: LoadedModel) -> list[dict[str, Any]]:
        """Rows ``{group, name, value, scope, layer, definition}`` for every numeric metric of every task."""
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        harness_model = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=self.config.batch_size,
                             device=str(lm.device))
        was_training = lm.model.training
        try:
            results = lm_eval.simple_evaluate(
                model=harness_model, tasks=list(self.config.tasks), num_fewshot=self.config.num_fewshot,
                limit=self.config.limit, task_manager=self.task_manager, log_samples=False,
                bootstrap_iters=0, verbosity="ERROR",
            )
        finally:
            lm.model.train(was_training)
        return result_rows(results or {}, self.config, getattr(lm_eval, "__version__", "?"))


def result_rows(results: dict[str, Any], config: LMEvalConfig, harness_version: str) -> list[dict[str, Any]]:
    """The harness's ``results`` dict as downstream rows (stderr entries and non-numbers left out)."""
    rows: list[dict[str, Any]] = []
    versions = results.get("versions", {})
    shots = results.get("n-shot", {})
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            metric, comma, filter_name = key.partition(",")
            if not comma or metric.endswith("_stderr") or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if not math.isfinite(float(value)):
                continue
            definition = (
                f"lm-eval {harness_version}: {task} v{versions.get(task, '?')}, "
                f"{shots.get(task, config.num_fewshot)}-shot, limit {config.limit}, filter {filter_name or 'none'}"
            )
            rows.append({"group": "downstream", "name": f"{task}_{metric}", "value": float(value),
                         "scope": task, "layer": None, "definition": definition})
    return rows
