"""Which facts a run edits, in which order, and which held-out facts probe the activations."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from seqedit.data import load_edit_requests
from seqedit.data.records import EditRequest
from seqedit.data.registry import dataset_names
from seqedit.runner.config import ConfigError, RunConfig

# The seed 'auto' gives a named dataset: kept at 0 so runs made before 'auto' existed edit the same facts.
NAMED_DATASET_ORDER_SEED = 0


@dataclass
class RequestSelection:
    edits: list[EditRequest]  # in editing order
    probes: list[EditRequest]  # facts never edited in this run (activation probe prompts)
    skipped: int = 0
    indices: list[int] = field(default_factory=list)  # position of each edit among the usable records
    order: str = ""  # "file order" or "shuffled with order_seed N"

    def describe(self) -> dict[str, Any]:
        """Which facts were taken (``summary.json``'s ``facts``)."""
        return {
            "order": self.order,
            "record_indices": index_ranges(self.indices),
            "case_ids": [r.case_id for r in self.edits],
        }

    def log_line(self, dataset: str, max_chars: int = 120) -> str:
        """One line for the run log; long lists are cut (summary.json holds them whole)."""
        ids = ", ".join(r.case_id for r in self.edits[:10]) + (" ..." if len(self.edits) > 10 else "")
        ranges = index_ranges(self.indices)
        if len(ranges) > max_chars:
            ranges = ranges[:max_chars].rsplit(",", 1)[0] + ", ... (all in summary.json)"
        return f"editing {len(self.edits)} facts of {dataset} in {self.order}: records {ranges} (case ids {ids})"


def index_ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 7, 9, 10]`` -> ``"0-2, 7, 9-10"``."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def order_seed_of(config: RunConfig) -> int | None:
    """The shuffle seed ``order_seed`` stands for (``auto``: 0 for a named dataset, file order for a file)."""
    if config.order_seed != "auto":
        return config.order_seed
    return NAMED_DATASET_ORDER_SEED if config.dataset.name in dataset_names("edits") else None


def select_requests(config: RunConfig) -> RequestSelection:
    """Load the dataset, shuffle it as ``order_seed`` says, take ``num_edits`` facts to edit and keep
    ``probe.prompts`` of the remaining facts as held-out probes."""
    spec = config.dataset
    loaded = load_edit_requests(spec.name, skip_invalid=spec.skip_invalid)
    records = list(loaded.records)[spec.offset :]
    order = list(range(spec.offset, spec.offset + len(records)))
    seed = order_seed_of(config)
    if seed is not None:
        random.Random(seed).shuffle(order)
        records = [records[i - spec.offset] for i in order]
    if len(records) < config.num_edits:
        raise ConfigError(
            f"field 'num_edits': dataset '{spec.name}' has {len(records)} usable records after offset "
            f"{spec.offset}, fewer than num_edits={config.num_edits}"
        )
    edits = records[: config.num_edits]
    indices = order[: config.num_edits]
    rest = records[config.num_edits :]
    probes = rest[: config.probe.prompts]
    if len(probes) < config.probe.prompts:
        # Too few held-out facts: probe with the edited facts' neighbourhood prompts instead (recorded).
        probes = probes + edits[: config.probe.prompts - len(probes)]
    return RequestSelection(
        edits=edits,
        probes=probes,
        skipped=len(getattr(loaded, "skipped", []) or []),
        indices=indices,
        order="file order" if seed is None else f"an order shuffled with order_seed {seed}",
    )
