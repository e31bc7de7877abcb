"""One actor of :func:`discopatch.scale.score_dataset`'s pool: loads the detector once, then decodes and scores a batch
of inputs per call, local paths exactly as ``discopatch score`` reads them and URIs through pyarrow's file systems.

It runs on the workers; :mod:`discopatch.scale` builds the dataset and the pool on the driver.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data.images import MAX_FILE_BYTES, ImageReadError, preprocess_many, utf8_text
from .detector import Detector
from .detector_scoring import Decoded
from .row_layout import columns

if TYPE_CHECKING:
    import pyarrow

#: Column of :func:`~discopatch.scale.score_inputs`' dataset holding each local path's bytes (``os.fsencode``): a file
#: name that is not valid UTF-8 cannot live in an Arrow string column, and it must still be opened by its real name.
RAW_PATH_COLUMN = "_discopatch_raw_path"
#: Reads of URIs in flight per actor (see :meth:`ScoreActor.read_ahead`).
READ_AHEAD = 8


def is_uri(text: str) -> bool:
    """``scheme://...`` (a pyarrow file-system URI), not a local path (``C:\\x`` has no ``//``)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum() and len(scheme) > 1


def output_schema(with_d_score: bool) -> pyarrow.Schema:
    """The score columns, typed, so that a batch of nothing but unreadable files has the same schema as any other."""
    import pyarrow as pa

    types = {"path": pa.string(), "is_ood": pa.bool_(), "error": pa.string(), "model_id": pa.string()}
    return pa.schema([(name, types.get(name, pa.float64())) for name in columns("path", with_d_score)])


class ScoreActor:
    """One actor of the pool: loads the detector once, then decodes and scores one batch per call."""

    def __init__(
        self,
        model: list[Any],
        options: dict[str, Any],
        threads: int,
        path_column: str,
        bytes_column: str | None,
    ) -> None:
        import ray
        import torch

        torch.set_num_threads(threads)  # also ONNX Runtime's thread count (engine.OnnxEngine)
        files: dict[str, bytes] = ray.get(model[0])
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                Path(tmp, name).write_bytes(data)
            self.detector = Detector.load(tmp, **options)
        self.with_d = self.detector.score_spec.needs_statistics
        self.schema = output_schema(self.with_d)
        self.path_column = path_column
        self.bytes_column = bytes_column
        self.filesystems: dict[str, Any] = {}

    def __call__(self, batch: pyarrow.Table) -> pyarrow.Table:
        import pyarrow as pa

        shown = [utf8_text(str(p)) for p in batch.column(self.path_column).to_pylist()]
        decoded = self.decode(batch, shown)
        det = self.detector
        results = det.score_decoded(shown, decoded)
        rows = [r.file_row(det.threshold, det.detector_id, self.with_d) for r in results]
        for row in rows:
            row["error"] = None if row["error"] is None else utf8_text(row["error"])
        out = pa.Table.from_pylist(rows, schema=self.schema)
        drop = {self.bytes_column, RAW_PATH_COLUMN, *self.schema.names}
        for name in batch.schema.names:
            if name not in drop:
                out = out.append_column(batch.schema.field(name), batch.column(name))
        return out

    def decode(self, batch: pyarrow.Table, shown: list[str]) -> list[Decoded]:
        """Each input through the product's decoder; a local path exactly as ``discopatch score`` reads it."""
        cfg = self.detector.preset.preprocess
        if self.bytes_column is not None:
            blobs = batch.column(self.bytes_column).to_pylist()
            return [self.decode_bytes(name, data, cfg) for name, data in zip(shown, blobs)]
        if RAW_PATH_COLUMN in batch.schema.names:
            sources: list[str] = [os.fsdecode(b) for b in batch.column(RAW_PATH_COLUMN).to_pylist()]
        else:
            sources = [str(p) for p in batch.column(self.path_column).to_pylist()]
        uris = [src for src in sources if is_uri(src)]
        fetched = self.read_ahead(uris)
        out: list[Decoded] = []
        for name, src in zip(shown, sources):
            if is_uri(src):
                out.append(self.decode_bytes(name, next(fetched), cfg))
            else:
                out.extend((img, err) for _, img, err in preprocess_many([src], cfg))
        fetched.close()
        return out

    def read_ahead(self, uris: list[str]) -> Generator[bytes | str, None, None]:
        """Each URI's bytes in order, :data:`READ_AHEAD` reads in flight (an object store answers each request after
        tens of milliseconds; one at a time would bound an actor to a few dozen images per second), so at most that
        many undecoded files are held at once."""
        if not uris:
            return
        from concurrent.futures import Future, ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(READ_AHEAD, len(uris))) as pool:
            pending: deque[Future[bytes | str]] = deque()
            for uri in uris:
                pending.append(pool.submit(self.read_uri, uri))
                if len(pending) >= READ_AHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def decode_bytes(self, name: str, data: bytes | str | None, cfg: Any) -> Decoded:
        """Decode raw bytes; a read error (a ``str``) passes through; messages name the input, not ``<bytes>``."""
        if data is None or isinstance(data, str):
            return None, data or f"{name}: no bytes"
        if not data:  # as a local file's message: the bytes came from a file or object
            return None, f"{name}: empty file (0 bytes)"
        if len(data) > MAX_FILE_BYTES:
            return None, f"{name}: file of {len(data)} bytes exceeds the {MAX_FILE_BYTES}-byte limit"
        ((_, img, err),) = preprocess_many([data], cfg)
        if err is not None:
            err = name + err.removeprefix("<bytes>").removeprefix("<input>")
        return img, err

    def read_uri(self, uri: str) -> bytes | str:
        """A URI's bytes, or why they cannot be read: the size is checked before reading, like a local file."""
        import pyarrow.fs as pafs

        head = uri.index("://") + 3
        cut = uri.find("/", head) + 1 or len(uri)
        key, rest = uri[:cut], uri[cut:]  # one file system per scheme and bucket/host, built once
        try:
            if key not in self.filesystems:
                self.filesystems[key] = pafs.FileSystem.from_uri(key)
            fs, base = self.filesystems[key]
            path = base.rstrip("/") + "/" + rest if rest else base
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                return f"{uri}: file not found"
            if info.type == pafs.FileType.Directory:
                return f"{uri}: is a folder, not an image"
            if info.size == 0:
                return f"{uri}: empty file (0 bytes)"
            if info.size is not None and info.size > MAX_FILE_BYTES:
                return f"{uri}: file of {info.size} bytes exceeds the {MAX_FILE_BYTES}-byte limit"
            with fs.open_input_file(path) as f:
                data: bytes = f.read()
            return data
        except (OSError, ValueError, ImageReadError) as e:
            return f"{uri}: cannot read ({e})"
