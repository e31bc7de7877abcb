"""Batch scoring on a Ray cluster (Ray Data): many machines, CPU or GPU actors, one detector load per actor.

:func:`score_dataset` takes a ``ray.data.Dataset`` with a column of file paths or URIs (or raw bytes) and returns one
with a ``discopatch score`` row per input; :func:`score_inputs` builds that dataset from what ``discopatch score``
accepts (files, folders) plus any URI pyarrow's file systems read (``s3://``, ``gs://``, ``file://``);
``discopatch score --ray`` writes its rows to one CSV, JSON-lines or Parquet file. Example::

    import ray, discopatch.scale as scale
    ray.init()
    ds = ray.data.read_binary_files("s3://bucket/images/", include_paths=True)
    rows = scale.score_dataset(ds, "model/", bytes_column="bytes", actors=8)
    rows.write_parquet("s3://bucket/scores/")

Why the choices:

* The detector directory is read once on the driver and shipped to the actors through the object store, so the
  worker nodes need no copy of it; each actor loads it (checksums verified) once in its constructor.
* Every input is decoded by :func:`discopatch.data.images.preprocess` and scored by
  :meth:`~discopatch.Detector.score_decoded`, the path ``discopatch score`` takes, so scores are bit-identical to it
  at the same thread count, unreadable files become the same error rows, and one image's decoded memory is bounded
  the same way (a URI's size is checked against ``MAX_FILE_BYTES`` before a byte is read).
* Actors take a fraction of a CPU by default (:data:`DEFAULT_CPUS_PER_ACTOR`): actors that each hold a whole CPU
  leave none for Ray's read tasks on a small machine, and the job never finishes.
* A killed actor is restarted and its batch retried (``max_restarts`` / ``max_task_retries``); a batch's rows reach
  the output only once its task succeeded, so every input appears exactly once.

Ray and pyarrow come with the ``[ray]`` extra and are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifact.files import load_artifact
from .config import EngineName, Precision
from .data.images import IMAGE_EXTENSIONS, expand_paths, utf8_text
from .detector import Detector
from .errors import ConfigError
from .scale_actor import RAW_PATH_COLUMN, ScoreActor, is_uri

if TYPE_CHECKING:
    import pyarrow
    import ray.data

#: CPUs each actor reserves: a fraction, so that on a 2-core machine two actors still leave room for read tasks.
DEFAULT_CPUS_PER_ACTOR = 0.5
#: Restarts per actor and retries per batch after a worker dies (not for errors raised by the code: those fail).
DEFAULT_RESTARTS = 8
HINT = "install it with: pip install 'discopatch[ray]'"


def require_ray() -> None:
    """Import Ray Data and pyarrow now, with an install hint when the extra is missing."""
    try:
        import pyarrow  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError(f"discopatch.scale needs Ray Data ({e}); {HINT}") from None


def connect(address: str = "auto") -> bool:
    """Connect to a Ray cluster; returns True when this call started a local one (the caller shuts it down).

    ``auto``: the cluster in ``RAY_ADDRESS`` when set, else a new local cluster with every CPU of this machine
    (no dashboard, workers' output not echoed). Any other value is a cluster address (``host:6379``,
    ``ray://host:10001``). Does nothing when Ray is already initialised in this process.
    """
    require_ray()
    import logging

    import ray

    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    env = os.environ.get("RAY_ADDRESS")
    if address == "auto" and not env:
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
        return True
    target = env if address == "auto" else address
    try:
        ray.init(address=target, **quiet)
    except ConnectionError as e:  # a one-line error for the command line, not Ray's traceback
        raise RuntimeError(f"cannot connect to the Ray cluster at {target}: {str(e).splitlines()[0]}") from None
    return False


def quiet_data_context() -> None:
    """No Ray Data progress bars or per-run log blocks: the command line shows its own progress."""
    import logging

    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[str | Path]:
    """Local files and folders as ``discopatch score`` expands them; a URI folder becomes its image files (by
    extension, recursive, sorted), a URI file stays as given (a missing one becomes an error row when scored)."""
    out: list[str | Path] = []
    for item in inputs:
        text = os.fspath(item)
        if not is_uri(text):
            out.extend(expand_paths([item]))
            continue
        import pyarrow.fs as pafs

        fs, root = pafs.FileSystem.from_uri(text)
        info = fs.get_file_info(root)
        if info.type != pafs.FileType.Directory:
            out.append(text)
            continue
        prefix = text.partition("://")[0] + "://"
        files = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        found = [
            f.path
            for f in files
            if f.type == pafs.FileType.File and os.path.splitext(f.path)[1].lower() in IMAGE_EXTENSIONS
        ]
        out.extend(prefix + p for p in sorted(found))
    return out


def input_table(paths: Sequence[str | Path]) -> pyarrow.Table:
    """The ``path`` column (as output files show it) plus :data:`RAW_PATH_COLUMN` (the name to open)."""
    import pyarrow as pa

    return pa.table(
        {
            "path": pa.array([utf8_text(str(p)) for p in paths], pa.string()),
            RAW_PATH_COLUMN: pa.array([os.fsencode(str(p)) for p in paths], pa.binary()),
        }
    )


def score_inputs(
    inputs: Sequence[str | os.PathLike[str]] | Sequence[str | Path], model: str | os.PathLike[str] | Detector, **kw: Any
) -> ray.data.Dataset:
    """:func:`expand_inputs` then :func:`score_dataset` (keyword arguments as there): rows in input order when the
    Data context preserves order (``discopatch score --ray`` sets it), else joined back through ``path``."""
    require_ray()
    import ray.data

    paths = expand_inputs(inputs)
    table = input_table(paths)
    batch = int(kw.get("batch_size", 256))
    # Blocks of whole batches, enough of them (up to ~1,000) that every actor gets work and a retry is small.
    step = max(batch, math.ceil(len(paths) / 1000 / batch) * batch) if paths else 1
    blocks = [table.slice(i, step) for i in range(0, max(len(paths), 1), step)] if paths else [table]
    return score_dataset(ray.data.from_arrow(blocks), model, **kw)


def score_dataset(
    ds: ray.data.Dataset,
    model: str | os.PathLike[str] | Detector,
    *,
    path_column: str = "path",
    bytes_column: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = DEFAULT_CPUS_PER_ACTOR,
    gpus_per_actor: float = 0.0,
    threads: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    engine: EngineName = "auto",
    precision: Precision = "fp32",
    max_restarts: int = DEFAULT_RESTARTS,
    allow_legacy: bool = False,
) -> ray.data.Dataset:
    """Score every row of ``ds`` on an actor pool; returns a dataset of ``discopatch score`` rows.

    ``path_column`` names each input (a local path on the workers, or a URI pyarrow reads); with ``bytes_column``
    (e.g. ``ray.data.read_binary_files(..., include_paths=True)``'s ``bytes``) the image is decoded from that
    column instead of being read. Output columns: ``path, score, [d_score,] p_value, is_ood, error, threshold,
    model_id`` (as ``discopatch score``; ``d_score`` for fused and statistics-only detectors), then the input's
    other columns unchanged (the bytes dropped), so a key of the caller's survives for joins.

    ``model`` is a detector directory (read here, shipped to the actors) or a :class:`~discopatch.Detector`.
    ``actors`` (default: one per CPU of the cluster, or per ``gpus_per_actor`` of its GPUs) each reserve
    ``cpus_per_actor`` CPUs and ``gpus_per_actor`` GPUs and run ``threads`` PyTorch / ONNX Runtime threads
    (default: the CPUs reserved, rounded up). ``device`` applies to GPU actors; CPU actors always score on CPU.
    ``max_restarts`` bounds restarts per actor and retries per batch after a worker process dies.
    ``allow_legacy`` loads a detector saved without a configuration digest (``--allow-legacy-artifact``).
    """
    require_ray()
    import ray
    import ray.data

    _check_options(ds, path_column, bytes_column, batch_size, cpus_per_actor, gpus_per_actor)
    actors = _pool_size(actors, gpus_per_actor)
    files = model_files(model, allow_legacy)
    options = {"device": device if gpus_per_actor else "cpu", "batch_size": batch_size}
    options |= {"engine": engine, "precision": precision, "allow_legacy": allow_legacy}
    with _remote_args_fn_allowed():
        return ds.map_batches(
            ScoreActor,
            batch_size=batch_size,
            batch_format="pyarrow",
            zero_copy_batch=True,
            # the model's files go into the object store once; each actor fetches them through the reference
            fn_constructor_kwargs={
                "model": [ray.put(files)],
                "options": options,
                "threads": threads or max(1, math.ceil(cpus_per_actor)),
                "path_column": path_column,
                "bytes_column": bytes_column,
            },
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_per_actor,
            num_gpus=gpus_per_actor,
            ray_remote_args_fn=_restart_limits(max_restarts),
        )


def _check_options(
    ds: ray.data.Dataset,
    path_column: str,
    bytes_column: str | None,
    batch_size: int,
    cpus_per_actor: float,
    gpus_per_actor: float,
) -> None:
    """Refuse bad options before any actor starts: sizes, and a missing input column where the dataset's schema is
    known without running anything (otherwise the columns are not checked here)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if cpus_per_actor < 0 or gpus_per_actor < 0:
        raise ConfigError("cpus_per_actor and gpus_per_actor must not be negative")
    schema = ds.schema(fetch_if_missing=False)
    names = list(schema.names) if schema is not None else []
    for column in (path_column, bytes_column):
        if column is not None and names and column not in names:
            raise ConfigError(f"the dataset has no column {column!r} (columns: {', '.join(names)})")


def _pool_size(actors: int | None, gpus_per_actor: float) -> int:
    """The actors to start: as given, or one per CPU of the cluster (per ``gpus_per_actor`` of its GPUs)."""
    import ray

    if actors is None:
        res: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        actors = int(res.get("GPU", 0) // gpus_per_actor) if gpus_per_actor else int(res.get("CPU", 1))
    if actors < 1:
        raise ConfigError(f"need at least one actor, got {actors} (no GPUs in the cluster?)")
    return actors


@contextlib.contextmanager
def _remote_args_fn_allowed() -> Iterator[None]:
    """Ray 2.60 bounds an actor's restarts only through ``ray_remote_args_fn`` (its defaults are unbounded), which
    it calls deprecated: that one warning is silenced around the call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args_fn` is deprecated")
        yield


def _restart_limits(max_restarts: int) -> Callable[[], dict[str, int]]:
    """Restarts per actor and retries per batch: a worker that dies on every try (a native crash on one file) must
    end the run, which ``--resume`` then continues, not loop forever."""
    return functools.partial(dict, max_restarts=max_restarts, max_task_retries=max_restarts)


def model_files(model: str | os.PathLike[str] | Detector, allow_legacy: bool = False) -> dict[str, bytes]:
    """A detector directory's files by name (a :class:`Detector` is saved to a temporary directory first)."""
    if isinstance(model, Detector):
        with tempfile.TemporaryDirectory() as tmp:
            model.save(tmp)
            return model_files(tmp)
    root = Path(model)
    load_artifact(root, allow_legacy)  # a damaged or mismatched detector fails here, named, not in every actor
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}
