"""What an interrupted intervention needs to continue exactly as if it had never stopped.

Saved every ``save_every`` steps, right after that step's norms were recorded, through the run store's
incremental states (``state/training_step_*``): the trained parameters (every parameter for full training,
the adapters for LoRA), AdamW's moments and step counts, the norm monitor (baselines, distances, spectral
blocks) and torch's random state. The data order is not saved: the training batches come from a seeded
iterator (``intervene.data.split_batches``), which a resumed run advances past the completed steps. The
untrained weights are the pretrained model's, loaded again. Only the newest state is kept; a finished run
keeps none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from seqedit.monitor.norms import NormMonitor
from seqedit.runner.store import RunStore

STATE_NAME = "training"
_PARAM, _OPTIM, _MONITOR, _RNG = "param/", "optim/", "monitor/", "rng/torch"


def save_training_state(
    store: RunStore,
    step: int,
    params: Mapping[str, torch.nn.Parameter],
    optimiser: torch.optim.Optimizer,
    monitor: NormMonitor,
) -> None:
    """Write the state after ``step`` and drop older ones (the newest complete state is never removed first)."""
    tensors: dict[str, torch.Tensor] = {f"{_PARAM}{name}": p.detach().to("cpu") for name, p in params.items()}
    for index, slots in optimiser.state_dict()["state"].items():
        for key, value in slots.items():
            tensors[f"{_OPTIM}{index}/{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    tensors.update({f"{_MONITOR}{key}": value for key, value in monitor.state_dict().items()})
    tensors[_RNG] = torch.get_rng_state()
    # Not incremental: nearly everything changes every step, and a blob kept alive by one unchanged tensor
    # (the baselines) would keep gigabytes of superseded weights on disk.
    store.save_state(STATE_NAME, step, tensors, {"step": step}, incremental=False)
    store.prune_states(step)


def latest_saved_step(store: RunStore) -> int | None:
    """The step of the newest saved training state, or None (the run saved none yet)."""
    steps = store.state_steps(STATE_NAME)
    return steps[-1] if steps else None


def restore_training_state(
    store: RunStore,
    step: int,
    params: Mapping[str, torch.nn.Parameter],
    optimiser: torch.optim.Optimizer,
    monitor: NormMonitor,
) -> None:
    """Load the state saved after ``step`` into the parameters, the optimiser and the monitor."""
    tensors, _ = store.load_state(STATE_NAME, step)
    saved = {key.removeprefix(_PARAM) for key in tensors if key.startswith(_PARAM)}
    if saved != set(params):
        missing, extra = sorted(set(params) - saved), sorted(saved - set(params))
        raise RuntimeError(f"{store.root}: the saved training state holds other parameters "
                           f"(missing {missing[:3]}, unexpected {extra[:3]})")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[f"{_PARAM}{name}"])
    current = optimiser.state_dict()
    # Hyper-parameters come from the config (checked equal on resume); the saved state holds the moments.
    optimiser.load_state_dict({"state": dict(_optimiser_slots(tensors)), "param_groups": current["param_groups"]})
    monitor.load_state_dict({key.removeprefix(_MONITOR): v for key, v in tensors.items() if key.startswith(_MONITOR)})
    torch.set_rng_state(tensors[_RNG])


def _optimiser_slots(tensors: Mapping[str, torch.Tensor]) -> Iterator[tuple[int, dict[str, Any]]]:
    slots: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(_OPTIM):
            index, slot = key.removeprefix(_OPTIM).split("/", 1)
            slots.setdefault(int(index), {})[slot] = value
    yield from sorted(slots.items())
