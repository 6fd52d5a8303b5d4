"""Few-shot downstream classification: SST-2, MRPC, CoLA, RTE, an RTE-style NLI set and MMLU.

The model answers by likelihood, not by generating: every option's text is scored as the continuation
of the prompt (:func:`seqedit.evaluate.scoring.score_targets`) and the highest-scoring option is the
prediction -- by the sum of the option's token log-probabilities, or, for ``mmlu_cloze`` whose options
are whole answers of different lengths, by the mean per token. The prompt is an instruction line,
``n_shots`` solved demonstrations and the question, separated by blank lines. The options of the
fixed-option templates are single tokens for common tokenizers, so one forward pass per example scores
all of them; the demonstrations are the same for every example of a task, so their key/value cache is
computed once per evaluation.

Templates (``{...}`` are the example's fields; the option follows the query after a space; label
indices keep GLUE's meaning, so the options are listed by label index):

==========  ====================================================================  =========================
task        query                                                                 options by label
==========  ====================================================================  =========================
sst2        ``Review: {sentence}\nIn summary, the movie was``                     0 bad, 1 good
mrpc        ``Sentence 1: {sentence1}\nSentence 2: {sentence2}\nQuestion: Do      0 no, 1 yes
            both sentences mean the same thing?\nAnswer:``
cola        ``Sentence: {sentence}\nQuestion: Is this sentence                    0 no, 1 yes
            grammatical?\nAnswer:``
rte, nli    ``Premise: {sentence1}\nHypothesis: {sentence2}\nQuestion: Does the   0 yes (entailment),
            premise entail the hypothesis?\nAnswer:``                             1 no (not_entailment)
mmlu        ``Question: {question}\nA. {c0}\nB. {c1}\nC. {c2}\nD. {c3}\nAnswer:``    A, B, C, D
mmlu_cloze  ``Question: {question}\nAnswer:`` (optional, not in the defaults)      the choices' own text
==========  ====================================================================  =========================

The SST-2 query is a cloze ("the movie was good/bad") rather than "Sentiment: positive/negative": on
SmolLM2-135M the latter put nearly every review in one class. ``mmlu_cloze`` (the format small models'
MMLU numbers are usually reported in) is offered because letter answers are at chance for models that
small.

Sampling (deterministic given the seed): the demonstrations and the evaluated examples are disjoint and
both drawn label-stratified (round-robin over the labels in a seeded order), so a balanced set stays
balanced and chance accuracy is 1/#labels; demonstration order is then shuffled. The same examples are
used at every checkpoint.

Metrics: accuracy; binary tasks add F1 of label 1 (GLUE's positive class: positive, equivalent,
acceptable, not_entailment) and the Matthews correlation; MMLU adds macro-F1 over the four answers and
the multi-class Matthews correlation (Gorodkin's R_K).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from seqedit.data import MultipleChoiceExample, TextClassificationExample, load_downstream
from seqedit.evaluate.metrics import accuracy, binary_f1, macro_f1, matthews_corrcoef
from seqedit.evaluate.scoring import score_targets
from seqedit.models.loading import LoadedModel
from seqedit.utils.rows import CheckpointRow, checkpoint_row

DownstreamExample = TextClassificationExample | MultipleChoiceExample


def _sst2(fields: Mapping[str, str]) -> str:
    return f"Review: {fields['sentence'].strip()}\nIn summary, the movie was"


def _mrpc(fields: Mapping[str, str]) -> str:
    return (
        f"Sentence 1: {fields['sentence1'].strip()}\nSentence 2: {fields['sentence2'].strip()}\n"
        "Question: Do both sentences mean the same thing?\nAnswer:"
    )


def _cola(fields: Mapping[str, str]) -> str:
    return f"Sentence: {fields['sentence'].strip()}\nQuestion: Is this sentence grammatical?\nAnswer:"


def _entailment(fields: Mapping[str, str]) -> str:
    return (
        f"Premise: {fields['sentence1'].strip()}\nHypothesis: {fields['sentence2'].strip()}\n"
        "Question: Does the premise entail the hypothesis?\nAnswer:"
    )


def _classification(render: Callable[[Mapping[str, str]], str]) -> Callable[[DownstreamExample], str]:
    def rendered(example: DownstreamExample) -> str:
        if not isinstance(example, TextClassificationExample):
            raise TypeError(f"expected a classification example, got {type(example).__name__}")
        return render(example.fields)

    return rendered


def _multiple_choice(example: DownstreamExample) -> MultipleChoiceExample:
    if not isinstance(example, MultipleChoiceExample):
        raise TypeError(f"expected a multiple-choice example, got {type(example).__name__}")
    return example


def _mmlu_letters(example: DownstreamExample) -> str:
    mc = _multiple_choice(example)
    lines = [f"Question: {mc.question.strip()}"]
    lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(mc.choices)]
    return "\n".join([*lines, "Answer:"])


def _mmlu_cloze(example: DownstreamExample) -> str:
    return f"Question: {_multiple_choice(example).question.strip()}\nAnswer:"


LETTERS = "ABCDEFGHIJ"
Rule = Literal["sum", "mean"]


@dataclass(frozen=True)
class TaskTemplate:
    """How one task is asked.

    ``options[i]`` is the answer text for label ``i``; ``options=None`` means the example's own choices
    are the answers (cloze-style multiple choice). ``rule``: options are compared by the ``sum`` of their
    tokens' log-probabilities, or by the ``mean`` per token (a length normalisation for answers of
    different lengths).
    """

    name: str
    instruction: str
    options: tuple[str, ...] | None
    render: Callable[[DownstreamExample], str]
    positive_label: int | None  # binary tasks: the class whose F1 is reported; None: macro-F1
    rule: Rule = "sum"
    dataset: str | None = None  # the examples' file when it is not the task's own name

    @property
    def data_name(self) -> str:
        return self.dataset or self.name

    def query(self, example: DownstreamExample) -> str:
        return self.render(example)

    def options_for(self, example: DownstreamExample) -> tuple[str, ...]:
        return self.options if self.options is not None else _multiple_choice(example).choices

    def demonstration(self, example: DownstreamExample) -> str:
        return f"{self.query(example)} {self.options_for(example)[label_of(example)]}"


TEMPLATES: Mapping[str, TaskTemplate] = MappingProxyType(
    {
        "sst2": TaskTemplate(
            "sst2",
            "Decide whether each movie review is positive or negative.",
            ("bad", "good"),
            _classification(_sst2),
            1,
        ),
        "mrpc": TaskTemplate(
            "mrpc",
            "Decide whether the two sentences are paraphrases of each other.",
            ("no", "yes"),
            _classification(_mrpc),
            1,
        ),
        "cola": TaskTemplate(
            "cola",
            "Decide whether each sentence is grammatically acceptable English.",
            ("no", "yes"),
            _classification(_cola),
            1,
        ),
        "rte": TaskTemplate(
            "rte",
            "Decide whether the premise entails the hypothesis.",
            ("yes", "no"),
            _classification(_entailment),
            1,
        ),
        "nli": TaskTemplate(
            "nli",
            "Decide whether the premise entails the hypothesis.",
            ("yes", "no"),
            _classification(_entailment),
            1,
        ),
        "mmlu": TaskTemplate(
            "mmlu",
            "The following are multiple choice questions (with answers).",
            ("A", "B", "C", "D"),
            _mmlu_letters,
            None,
        ),
        "mmlu_cloze": TaskTemplate(
            "mmlu_cloze",
            "The following are questions (with answers).",
            None,
            _mmlu_cloze,
            None,
            rule="mean",
            dataset="mmlu",
        ),
    }
)
# The tasks of the AlphaEdit/ENCORE downstream suite; ``mmlu_cloze`` is an optional extra.
DEFAULT_TASKS: tuple[str, ...] = ("sst2", "mrpc", "cola", "rte", "nli", "mmlu")


def label_of(example: DownstreamExample) -> int:
    return (
        example.label if isinstance(example, TextClassificationExample) else _multiple_choice(example).answer
    )


def stratified_sample(
    labels: Sequence[int], n: int, rng: random.Random, exclude: Collection[int] = ()
) -> list[int]:
    """``n`` indices drawn round-robin over the labels (seeded label order, shuffled within a label)."""
    excluded = set(exclude)
    by_label: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        if i not in excluded:
            by_label.setdefault(y, []).append(i)
    for pool in by_label.values():
        rng.shuffle(pool)
    order = sorted(by_label)
    rng.shuffle(order)
    chosen: list[int] = []
    while len(chosen) < n and any(by_label.values()):
        for y in order:
            if by_label[y] and len(chosen) < n:
                chosen.append(by_label[y].pop())
    return chosen


class DownstreamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: tuple[str, ...] = Field(default=DEFAULT_TASKS, description="Tasks to run, from: " + ", ".join(TEMPLATES))
    n_shots: int = Field(default=4, ge=0, description="Demonstrations in each prompt.")
    n_examples: int | None = Field(
        default=100, ge=1, description="Examples evaluated per task (None: all but the shots)."
    )
    seed: int = 0
    batch_size: int = Field(default=16, ge=1, description="Examples per forward pass.")
    max_batch_tokens: int = Field(
        default=4096, ge=1, description="Padded query tokens per forward pass (context excluded)."
    )
    cache_context: bool = Field(
        default=True, description="Run the shared few-shot prefix once per task (same numbers)."
    )


@dataclass(frozen=True)
class TaskResult:
    task: str
    n: int
    n_shots: int
    seed: int
    rule: str
    accuracy: float
    f1: float
    mcc: float
    f1_definition: str
    predictions: tuple[int, ...]
    labels: tuple[int, ...]

    def rows(self) -> list[CheckpointRow]:
        how = f"{self.n_shots}-shot,n={self.n},seed={self.seed}; option with max {self.rule} log-prob"
        return [
            checkpoint_row(
                "downstream",
                f"{self.task}_accuracy",
                self.accuracy,
                scope=self.task,
                definition=f"accuracy; {how}",
            ),
            checkpoint_row(
                "downstream",
                f"{self.task}_f1",
                self.f1,
                scope=self.task,
                definition=f"{self.f1_definition}; {how}",
            ),
            checkpoint_row(
                "downstream",
                f"{self.task}_mcc",
                self.mcc,
                scope=self.task,
                definition=f"Matthews correlation; {how}",
            ),
        ]


@dataclass(frozen=True)
class DownstreamResults:
    tasks: tuple[TaskResult, ...]

    def rows(self) -> list[CheckpointRow]:
        return [row for t in self.tasks for row in t.rows()]

    def by_task(self) -> dict[str, TaskResult]:
        return {t.task: t for t in self.tasks}


@dataclass(frozen=True)
class PreparedTask:
    """A task's fixed demonstrations and evaluation examples."""

    template: TaskTemplate
    shots: tuple[DownstreamExample, ...]
    examples: tuple[DownstreamExample, ...]

    @property
    def context(self) -> str:
        parts = [self.template.instruction, *(self.template.demonstration(s) for s in self.shots)]
        return "\n\n".join(parts) + "\n\n"


def prepare_task(
    task: str, examples: Sequence[DownstreamExample], *, n_shots: int, n_examples: int | None, seed: int
) -> PreparedTask:
    if task not in TEMPLATES:
        raise ValueError(f"unknown downstream task {task!r}; known: {', '.join(TEMPLATES)}")
    template = TEMPLATES[task]
    labels = [label_of(e) for e in examples]
    bad = sorted(
        {y for e, y in zip(examples, labels, strict=True) if not 0 <= y < len(template.options_for(e))}
    )
    if bad:
        raise ValueError(f"{task}: labels {bad} have no answer option ({template.options or 'the choices'})")
    rng = random.Random(f"{task}:{seed}")
    shot_idx = stratified_sample(labels, n_shots, rng)
    rng.shuffle(shot_idx)
    remaining = len(examples) - len(shot_idx)
    wanted = remaining if n_examples is None else min(n_examples, remaining)
    eval_idx = stratified_sample(labels, wanted, rng, exclude=set(shot_idx))
    if not eval_idx:
        raise ValueError(f"{task}: no examples left to evaluate after {n_shots} demonstrations")
    return PreparedTask(template, tuple(examples[i] for i in shot_idx), tuple(examples[i] for i in eval_idx))


def evaluate_task(
    lm: LoadedModel, prepared: PreparedTask, config: DownstreamConfig, *, show_progress: bool = False
) -> TaskResult:
    template = prepared.template
    options = [template.options_for(e) for e in prepared.examples]
    prompts = [template.query(e) for e, opts in zip(prepared.examples, options, strict=True) for _ in opts]
    targets = [option for opts in options for option in opts]
    n_classes = max(len(opts) for opts in options)
    scores = score_targets(
        lm,
        prompts,
        targets,
        context=prepared.context,
        cache_context=config.cache_context,
        batch_size=config.batch_size * n_classes,
        max_batch_tokens=config.max_batch_tokens,
        show_progress=show_progress,
        desc=template.name,
    )
    values = scores.sum_log_prob if template.rule == "sum" else scores.mean_log_prob
    predictions, start = [], 0
    for opts in options:
        predictions.append(int(values[start : start + len(opts)].argmax()))
        start += len(opts)
    labels = [label_of(e) for e in prepared.examples]
    if template.positive_label is None:
        f1 = macro_f1(predictions, labels, list(range(n_classes)))
        f1_definition = f"macro-F1 over {n_classes} options"
    else:
        positive = template.options_for(prepared.examples[0])[template.positive_label]
        f1 = binary_f1(predictions, labels, positive=template.positive_label)
        f1_definition = f"binary F1, positive = label {template.positive_label} ('{positive}')"
    return TaskResult(
        task=template.name,
        n=len(labels),
        n_shots=len(prepared.shots),
        seed=config.seed,
        rule=template.rule,
        accuracy=accuracy(predictions, labels),
        f1=f1,
        mcc=matthews_corrcoef(predictions, labels),
        f1_definition=f1_definition,
        predictions=tuple(predictions),
        labels=tuple(labels),
    )


class DownstreamEvaluator:
    """Prepares each task once (fixed demonstrations and examples) and evaluates any model on them.

    The unedited model's results are the baseline; the runner calls :meth:`evaluate` at step 0 and at
    every checkpoint.
    """

    def __init__(
        self,
        config: DownstreamConfig | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        examples: Mapping[str, Sequence[DownstreamExample]] | None = None,
    ) -> None:
        self.config = config or DownstreamConfig()
        self.prepared: dict[str, PreparedTask] = {}
        for task in self.config.tasks:
            if task not in TEMPLATES:
                raise ValueError(f"unknown downstream task {task!r}; known: {', '.join(TEMPLATES)}")
            source = TEMPLATES[task].data_name
            if examples is not None and source in examples:
                pool = examples[source]
            else:
                pool = load_downstream(source, data_dir=data_dir).records
            self.prepared[task] = prepare_task(
                task,
                pool,
                n_shots=self.config.n_shots,
                n_examples=self.config.n_examples,
                seed=self.config.seed,
            )

    def evaluate(self, lm: LoadedModel, *, show_progress: bool = False) -> DownstreamResults:
        results = []
        for task in tqdm(self.prepared, desc="downstream", disable=not show_progress, leave=False):
            results.append(evaluate_task(lm, self.prepared[task], self.config, show_progress=show_progress))
        return DownstreamResults(tuple(results))
