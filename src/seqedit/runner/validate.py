"""Everything about a run that can be checked before any work, checked before the run directory exists.

A run that fails at its baseline or first step leaves a directory that was written for nothing; so the
checks that need only the config run before the model loads, and those that need the model (layers against
its depth, record lengths against its context, the editor's own prerequisites) run after it loads and
before ``config.yaml`` is written. Every error is a :class:`~seqedit.runner.config.ConfigError` naming the
field (and, for records, the dataset and case id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from seqedit.data.records import EditRequest
from seqedit.editors.base import Editor
from seqedit.models.loading import LoadedModel
from seqedit.runner.config import ConfigError, RunConfig

# Context-template prefixes and the few-shot framing of the edit metrics add tokens before a record's prompt.
PROMPT_TOKEN_MARGIN = 64
# No tokenizer produces fewer than one token per this many characters on real text; a longer string is
# rejected without tokenizing it (a 2 MB subject would otherwise be tokenized, then run through the model).
MAX_CHARS_PER_TOKEN = 32


def context_length(lm: LoadedModel) -> int | None:
    """The model's maximum sequence length (position embeddings), if its config says."""
    config = getattr(lm.model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def validate_output_dir(config: RunConfig) -> None:
    """The run directory's path must be a directory (or not exist yet)."""
    out = Path(config.output_dir)
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"field 'output_dir': {parent} exists and is not a directory")


def _in_range(layers: Iterable[int], n: int) -> list[int]:
    return [layer for layer in layers if not -n <= int(layer) < n]


def validate_layers(config: RunConfig, lm: LoadedModel, editor: Editor) -> None:
    """Edited layers (the editor's resolved ``layers``) and monitored probe layers exist in the model."""
    n = lm.adapter.num_layers
    edited = getattr(editor.config, "layers", None)
    if edited is not None:
        bad = _in_range(edited, n)
        if bad:
            raise ConfigError(
                f"field 'hparams.layers': layer(s) {bad} out of range; {lm.name} has {n} layers (0-{n - 1})"
            )
    if config.probe.layers is not None:
        bad = _in_range(config.probe.layers, n)
        if bad:
            raise ConfigError(
                f"field 'probe.layers': layer(s) {bad} out of range; {lm.name} has {n} layers "
                f"(0-{n - 1}, or -{n} to -1 counting from the top)"
            )


def _texts(request: EditRequest) -> Iterable[tuple[str, str]]:
    """(field, text) of every prompt the run feeds the model for one record, with its target appended."""
    yield "subject", f"{request.full_prompt} {request.target_new}"
    for i, text in enumerate(request.paraphrase_prompts):
        yield f"paraphrase_prompts[{i}]", f"{text} {request.target_new}"
    for i, neighbour in enumerate(request.neighborhood):
        yield f"neighborhood[{i}]", f"{neighbour.prompt} {neighbour.target}"
    for i, text in enumerate(request.generation_prompts):
        yield f"generation_prompts[{i}]", text


def validate_record_lengths(config: RunConfig, lm: LoadedModel, requests: Sequence[EditRequest]) -> None:
    """Every record's prompts (plus target and context prefix) fit the model's context."""
    context = context_length(lm)
    if context is None:
        return
    budget = context - PROMPT_TOKEN_MARGIN
    for request in requests:
        for field, text in _texts(request):
            if len(text) > budget * MAX_CHARS_PER_TOKEN:
                n_tokens = f"{len(text):,} characters"
            else:
                count = len(lm.tokenizer(text, add_special_tokens=True)["input_ids"])
                if count <= budget:
                    continue
                n_tokens = f"{count:,} tokens"
            where = field if field != "subject" else "subject/prompt/target_new"
            raise ConfigError(
                f"dataset '{config.dataset.name}': record case_id {request.case_id!r}, field '{where}': "
                f"{n_tokens}, more than fit {lm.name}'s context of {context} tokens "
                f"(less {PROMPT_TOKEN_MARGIN} for prefixes); shorten or remove the record"
            )


def validate_editor_ready(editor: Editor, lm: LoadedModel) -> None:
    """The editor's prerequisites that only show with the model (e.g. MEND's trained checkpoint)."""
    prepare = getattr(editor, "hypernet_for", None)
    if prepare is None:
        return
    try:
        prepare(lm)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise ConfigError(f"method '{editor.name}': {exc}") from exc


def validate_with_model(
    config: RunConfig, lm: LoadedModel, editor: Editor, requests: Sequence[EditRequest]
) -> None:
    """All checks that need the loaded model; run before the run directory is written."""
    validate_layers(config, lm, editor)
    validate_record_lengths(config, lm, requests)
    validate_editor_ready(editor, lm)
