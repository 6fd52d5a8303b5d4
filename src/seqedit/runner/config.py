"""The run configuration: one YAML file, validated before any work starts, every field documented.

``seqedit run CONFIG.yaml --set method=encore --set evaluation.downstream_tasks=[sst2]`` overrides fields
from the command line (values are parsed as YAML).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seqedit.errors import UserError
from seqedit.runner.health import HealthSpec

MatrixGroupName = Literal["edited", "mlp", "attn", "all"]
DOWNSTREAM_TASKS = ("sst2", "mrpc", "cola", "rte", "nli", "mmlu", "mmlu_cloze")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetSpec(_Strict):
    name: str = Field(
        default="builtin",
        description="Dataset of edit requests: 'builtin' (no data dir needed), 'counterfact', 'zsre', or a file path.",
    )
    offset: int = Field(default=0, ge=0, description="Skip this many records before sampling.")
    skip_invalid: bool = Field(default=False, description="Skip malformed records (and report how many) instead of failing.")


class CheckpointSpec(_Strict):
    every: int | None = Field(
        default=50, ge=1, description="Measure every this many edits (rounded to whole batches); null: never by count."
    )
    log_spaced: bool = Field(
        default=False, description="Also measure at log-spaced edit counts (1, 2, 5, 10, 20, 50, ..., each rounded up to a batch end)."
    )
    at: list[int] = Field(default_factory=list, description="Also measure after exactly these edit counts.")

    def edit_counts(self, num_edits: int, batch_size: int) -> list[int]:
        """Edit counts (multiples of the batch size, the last batch included) at which to measure."""
        steps = math.ceil(num_edits / batch_size)
        counts = {min(s * batch_size, num_edits) for s in range(1, steps + 1)}
        chosen: set[int] = {num_edits}
        if self.every:
            # a count is chosen when a multiple of `every` falls inside the batch that ends at it
            chosen |= {c for c in counts if c // self.every > (c - batch_size) // self.every}
        if self.log_spaced:
            marks = [m * 10**e for e in range(0, 8) for m in (1, 2, 5)]
            chosen |= {min(c for c in counts if c >= m) for m in marks if m <= num_edits}
        chosen |= {min(c for c in counts if c >= a) for a in self.at if 0 < a <= num_edits}
        return sorted(chosen)


def _all_groups() -> list[MatrixGroupName]:
    return ["all"]


class TrackingSpec(_Strict):
    groups: list[MatrixGroupName] = Field(
        default_factory=_all_groups,
        description="Matrices whose norms are tracked every batch: 'edited' (MLP output projections), 'mlp', "
        "'attn' or 'all' (both, in every layer: needed to see the model's balance).",
    )
    spectral: bool = Field(default=True, description="Also track the largest singular value (warm-started power iteration).")


class ProbeSpec(_Strict):
    texts: int = Field(default=16, ge=2, description="Held-out text snippets in the activation probe set.")
    prompts: int = Field(default=16, ge=0, description="Edit-style prompts (from facts not being edited) in the probe set.")
    max_tokens: int = Field(default=48, ge=4, description="Tokens per probe text.")
    pca_k: int = Field(default=8, ge=1, description="Dimension of the PCA subspaces compared by principal angles.")
    layers: list[int] | None = Field(default=None, description="Layers to monitor; null: all layers.")


class TextSpec(_Strict):
    """Text splits the runner's own measurements read (the defaults of every consumer: seqedit.data.corpora)."""

    probes: str | None = Field(
        "wikitext2:valid",
        description="Split of the activation probe snippets: wikitext2:valid, wikitext2:test or a WikiText-style "
        "file; it must share no paragraph with the key-statistics sample (checked, else the run is refused). "
        "null: wikitext2:test unchecked, the probes of runs made before splits were named (they overlap the "
        "default statistics sample; the overlap is recorded). Such runs resume with null.",
    )


class LMEvalSpec(_Strict):
    """lm-evaluation-harness tasks at checkpoints (``pip install "seqedit[lm-eval]"``)."""

    tasks: list[str] = Field(min_length=1, description="Task or group names known to lm-evaluation-harness.")
    num_fewshot: int | None = Field(default=None, ge=0, description="Few-shot examples; null: each task's default.")
    limit: int | None = Field(default=100, ge=1, description="Examples per task (null: all of them; slow on a CPU).")
    include_path: str | None = Field(default=None, description="Directory of extra task YAML files (tasks over local files).")
    batch_size: int = Field(default=8, ge=1, description="Batch size of the harness's forward passes.")

    @model_validator(mode="after")
    def _installed(self) -> LMEvalSpec:
        import importlib.util

        if importlib.util.find_spec("lm_eval") is None:
            raise ValueError('evaluation.lm_eval needs lm-evaluation-harness: pip install "seqedit[lm-eval]"')
        return self


class EvaluationSpec(_Strict):
    edit_metrics: bool = Field(default=True, description="Edit metrics (efficacy, paraphrase, neighbourhood) at checkpoints.")
    retention: Literal["all", "sample", "fixed", "none"] = Field(
        default="all",
        description=(
            "Also measure on earlier edits: all edits so far, a new random sample at each checkpoint, "
            "a fixed seeded sample of the planned edits (its members edited so far), or none."
        ),
    )
    retention_sample: int = Field(default=100, ge=1, description="Sample size when retention is 'sample' or 'fixed'.")
    fluency: bool = Field(default=False, description="Generation entropy (slow: generates text) at checkpoints.")
    activations: bool = Field(default=True, description="Activation norms and subspace shift at checkpoints.")
    perplexity: bool = Field(default=True, description="Perplexity on held-out text at checkpoints.")
    perplexity_tokens: int = Field(default=4096, ge=64, description="Token budget of the perplexity evaluation.")
    downstream_tasks: list[str] = Field(
        default_factory=list, description=f"Few-shot tasks at checkpoints, from {list(DOWNSTREAM_TASKS)}."
    )
    downstream_examples: int = Field(default=50, ge=1, description="Examples per downstream task.")
    downstream_shots: int = Field(default=3, ge=0, description="Few-shot demonstrations per prompt.")
    batch_size: int = Field(default=16, ge=1, description="Batch size of evaluation forward passes.")
    lm_eval: LMEvalSpec | None = Field(
        default=None, description="Also run lm-evaluation-harness tasks at checkpoints (group downstream, scope the task)."
    )

    @field_validator("downstream_tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str]) -> list[str]:
        unknown = [t for t in tasks if t not in DOWNSTREAM_TASKS]
        if unknown:
            raise ValueError(f"unknown downstream task(s) {unknown}; choose from {list(DOWNSTREAM_TASKS)}")
        return tasks


class RunConfig(_Strict):
    """A sequential editing experiment."""

    name: str | None = Field(default=None, description="Label used in reports; default: '<method>-<model>'.")
    model: str = Field(default="smollm2-135m", description="Embedded model name, Hugging Face hub id or local directory.")
    dtype: str = Field(default="float32", description="Model dtype: float32, bfloat16 or float16.")
    device: str = Field(default="cpu", description="cpu, cuda, cuda:1, mps or auto.")
    method: str = Field(default="memit", description="Editing method (see `seqedit methods`).")
    profile: str | None = Field(
        default=None,
        description="Defaults profile (see `seqedit methods NAME`): smollm2, llama3-8b, gpt2-xl, generic, "
        "released (the released MEMIT/ENCORE recipe on top of the model's profile) or NAME+released; null: "
        "found from the model's checkpoint name, then its model type, else generic (with a notice).",
    )
    hparams: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the profile's defaults for this model (validated)."
    )
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    num_edits: int = Field(default=200, ge=1, description="Total number of facts to edit, in sequence.")
    batch_size: int = Field(default=10, ge=1, description="Facts per editor call (1 for one-at-a-time methods such as ROME).")
    order_seed: int | Literal["auto"] | None = Field(
        default="auto",
        description="Shuffle the dataset with this seed before taking num_edits; null keeps the file's order; "
        "auto: seed 0 for the named datasets (builtin, counterfact, zsre), the file's order for a dataset file.",
    )
    seed: int = Field(default=0, description="Seed of everything random in the run (probe choice, sampling, editors).")
    checkpoints: CheckpointSpec = Field(default_factory=CheckpointSpec)
    track: TrackingSpec = Field(default_factory=TrackingSpec)
    probe: ProbeSpec = Field(default_factory=ProbeSpec)
    text: TextSpec = Field(default_factory=TextSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    output_dir: Path = Field(default=Path("runs/run"), description="Run directory (created; must be new unless resuming).")
    save_ledger: bool = Field(default=True, description="Keep every batch's weight deltas (needed to resume and to undo).")
    health: HealthSpec = Field(
        default_factory=HealthSpec, description="Divergence checks and collapse criteria (runner/health.py)."
    )
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list,
        description="Also send norms, edit and downstream metrics and timings to these experiment trackers "
        "(files under the run directory; W&B in offline mode). Extras: seqedit[tensorboard|mlflow|wandb].",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.batch_size > self.num_edits:
            raise ValueError(f"batch_size ({self.batch_size}) is larger than num_edits ({self.num_edits})")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.method}-{Path(self.model).name}"


class ConfigError(UserError, ValueError):
    """A run configuration is invalid; the message names the file and field."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"evaluation.downstream_tasks=[sst2, rte]"`` -> (["evaluation", "downstream_tasks"], ["sst2", "rte"])."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.subkey=value")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({problem})") from exc
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    merged = dict(data)
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[path[-1]] = value
    return merged


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid run configuration"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  field '{field}': {err['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults), apply overrides, validate. Errors name the field."""
    source = str(path) if path else "defaults"
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.exists():
            raise ConfigError(f"config file {file} does not exist")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{file}: the top level must be a mapping of fields")
        data = loaded or {}
    data = apply_overrides(data, overrides or [])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from exc


def config_to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def config_reference() -> str:
    """Every field with its default and description, as commented YAML (``seqedit run --show-config``)."""
    lines: list[str] = []

    def walk(model: type[BaseModel], indent: int) -> None:
        instance = model()
        for name, field in model.model_fields.items():
            pad = "  " * indent
            if field.description:
                lines.append(f"{pad}# {field.description}")
            value = getattr(instance, name)
            if isinstance(value, BaseModel):
                lines.append(f"{pad}{name}:")
                walk(type(value), indent + 1)
            else:
                dumped = yaml.safe_dump({name: value if not isinstance(value, Path) else str(value)})
                lines.append(pad + dumped.strip().replace("\n", "\n" + pad))

    walk(RunConfig, 0)
    return "\n".join(lines) + "\n"
