"""Optional experiment trackers: the run's norms, edit and downstream metrics and timings, also sent to
TensorBoard, MLflow or Weights & Biases (``trackers: [tensorboard, mlflow, wandb]`` in the run config).

The run directory stays the record; trackers get a copy of the rows as they are appended (the store calls
:meth:`Trackers.observe`), with the number of edits as the step axis. Everything is written locally:
TensorBoard event files under ``RUN_DIR/tensorboard``, an MLflow file store under ``RUN_DIR/mlruns``
(unless ``MLFLOW_TRACKING_URI`` names another; MLflow 3 wants ``MLFLOW_ALLOW_FILE_STORE=true`` for it, set here), and W&B in offline mode under ``RUN_DIR/wandb`` unless
``WANDB_MODE`` says otherwise (``wandb sync`` uploads it later).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

from seqedit.runner.config import ConfigError, RunConfig
from seqedit.runner.store import RunStore

TrackerName = Literal["tensorboard", "mlflow", "wandb"]
EXTRAS: dict[str, str] = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


class TrackerUnavailable(ConfigError):
    """A requested tracker's package is not installed (a config error: exit code 2 on the command line)."""


class Backend(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------- metrics
def metrics_from_rows(table: str, rows: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    """Scalars by number of edits from rows of ``norms``, ``timings`` or ``checkpoints`` (other tables and
    per-layer activation rows are left to the run directory and report)."""
    out: dict[int, dict[str, float]] = {}

    def put(n_edits: Any, name: str, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.setdefault(int(n_edits), {})[name] = float(value)

    for row in rows:
        if "n_edits" not in row:
            continue
        n = row["n_edits"]
        if table == "norms" and row.get("edited"):
            put(n, f"norms/{row['matrix']}/fro_rel", row.get("fro_rel"))
            put(n, f"norms/{row['matrix']}/dist_from_init", row.get("dist_from_init"))
        elif table == "timings":
            for key, value in row.items():
                if key == "total_s" or key.startswith("phase_"):
                    put(n, f"timing/{key}", value)
        elif table == "checkpoints" and row.get("group") in {"edit", "downstream"} and row.get("layer") is None:
            put(n, f"{row['group']}/{row['name']}/{row.get('scope') or '-'}", row.get("value"))
    return out


# ---------------------------------------------------------------------------------------------- backends
class _TensorBoard:
    def __init__(self, run_dir: Path, label: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise TrackerUnavailable("tensorboard") from exc
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, run_dir: Path, label: str, params: Mapping[str, Any]) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise TrackerUnavailable("mlflow") from exc
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a file store in the run directory: no server, no database (MLflow 3 asks to opt in)
            uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name("seqedit")
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("seqedit")
        self.run_id = self.client.create_run(experiment_id, run_name=label).info.run_id
        for key, value in params.items():
            self.client.log_param(self.run_id, key, str(value)[:500])

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # MLflow metric names may not contain '@' and the like; the ones made here use letters, '/', '_', '-'.
        batch = [Metric(key=name, value=value, timestamp=now, step=step) for name, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class _WandB:
    def __init__(self, run_dir: Path, label: str, params: Mapping[str, Any]) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise TrackerUnavailable("wandb") from exc
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "seqedit"), name=label, dir=str(run_dir),
            mode=os.environ.get("WANDB_MODE", "offline"), config=dict(params), reinit="create_new",
        )

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


# ---------------------------------------------------------------------------------------------- fan-out
class Trackers:
    """The trackers of one run; :meth:`observe` receives every row the run store appends."""

    def __init__(self, backends: list[Backend]) -> None:
        self.backends = backends

    def observe(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        for step, metrics in sorted(metrics_from_rows(table, rows).items()):
            for backend in self.backends:
                backend.log(metrics, step)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


def open_trackers(
    names: Iterable[TrackerName], run_dir: str | Path, label: str, params: Mapping[str, Any] | None = None
) -> Trackers:
    """Start the named trackers for a run; TrackerUnavailable names the extra to install."""
    root = Path(run_dir)
    params = dict(params or {})
    backends: list[Backend] = []
    try:
        for name in dict.fromkeys(names):
            if name == "tensorboard":
                backends.append(_TensorBoard(root, label))
            elif name == "mlflow":
                backends.append(_MLflow(root, label, params))
            elif name == "wandb":
                backends.append(_WandB(root, label, params))
    except TrackerUnavailable as exc:
        Trackers(backends).close()
        missing = str(exc)
        raise TrackerUnavailable(
            f"trackers: '{missing}' is not installed; pip install \"seqedit[{EXTRAS[missing]}]\""
        ) from exc
    return Trackers(backends)


TRACKER_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def require_trackers(names: Iterable[str]) -> None:
    """Refuse, before any work, a tracker whose package is not installed."""
    import importlib.util

    for name in names:
        if importlib.util.find_spec(TRACKER_MODULES[name]) is None:
            raise TrackerUnavailable(f"trackers: '{name}' is not installed; pip install \"seqedit[{EXTRAS[name]}]\"")


@contextmanager
def tracked(store: RunStore, config: RunConfig) -> Iterator[None]:
    """The run's trackers observe ``store`` for the duration of the block and are closed after it. They are
    opened with the first rows the run writes, so a run refused before it starts leaves no tracker files."""
    require_trackers(config.trackers)
    opened: list[Trackers] = []

    def observe(table: str, rows: list[dict[str, Any]]) -> None:
        if not opened:
            opened.append(open_trackers(config.trackers, store.root, config.label, config.model_dump(mode="json")))
        opened[0].observe(table, rows)

    store.observers.append(observe)
    try:
        yield
    finally:
        store.observers.remove(observe)
        for trackers in opened:
            trackers.close()
