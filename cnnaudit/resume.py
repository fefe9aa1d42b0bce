"""Checkpoints for `--resume`: each finished check's result is saved under OUT/.cnnaudit-checkpoints and
reused when the model (sha256), the data and any training data (table, file sizes and modification
times), the configuration, the check's options and the checks before it are all unchanged; anything
different is recomputed.

Checkpoints cannot run code: anyone able to write OUT could plant a file there, so nothing is
unpickled. A checkpoint is a JSON file (the result's summary, report data, findings, the clean
evaluation's state and the text columns of its rows) and an `.npz` of the numeric and boolean columns,
read with `allow_pickle=False`. Column order and dtypes are restored exactly, so later checks read the
same rows as in an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .checks.base import CheckResult
from .io import atomic_write, write_text

FOLDER = ".cnnaudit-checkpoints"


def data_fingerprint(dataset, sample_ids) -> str:
    """The table, and the size and modification time of every file a check reads: each sample's image and
    each annotation mask it names (`*_mask` columns; the shortcut check measures inside them)."""
    h = hashlib.sha256()
    table = dataset.table
    h.update(table.to_csv(index=False).encode())
    mask_columns = [c for c in table.columns if str(c).endswith("_mask")]
    for sid in sample_ids:
        files = [dataset.path_of(sid)]
        files += [v for v in (table[c].iat[int(sid)] for c in mask_columns) if isinstance(v, str) and v.strip()]
        for rel in files:
            try:
                st = os.stat(dataset.abspath(rel))
                h.update(f"{sid}:{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{sid}:{rel}:missing\n".encode())
    return h.hexdigest()


def _options(opts) -> object:
    if isinstance(opts, (list, tuple)):
        return [_options(o) for o in opts]
    return asdict(opts) if is_dataclass(opts) else opts


class Checkpoints:
    def __init__(self, out_dir, *, model_sha256: str, data: str, config: dict):
        self.folder = Path(out_dir) / FOLDER
        self.base = hashlib.sha256(json.dumps({"version": __version__, "model": model_sha256, "data": data,
                                               "config": config}, sort_keys=True, default=str).encode()).hexdigest()

    def key(self, name: str, options, previous: str) -> str:
        payload = json.dumps({"base": self.base, "check": name, "options": _options(options), "previous": previous},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _stem(self, name: str, key: str) -> Path:
        return self.folder / f"{name}-{key[:24]}"

    def load(self, name: str, key: str) -> CheckResult | None:
        stem = self._stem(name, key)
        meta_path, arrays_path = stem.with_suffix(".json"), stem.with_suffix(".npz")
        if not (meta_path.is_file() and arrays_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            with np.load(arrays_path, allow_pickle=False) as arrays:
                frames = {k: _frame(spec, arrays, k) for k, spec in meta["frames"].items()}
            return CheckResult(meta["name"], frames.pop("rows"), meta["summary"], meta["report"], meta["findings"],
                               outputs={**meta["outputs"], **frames})
        # A damaged or foreign checkpoint is recomputed, never trusted, whatever reading it raised (a dtype
        # name numpy does not know is a TypeError, a truncated npz a BadZipFile, a list for a dict an
        # AttributeError): nothing in a checkpoint is code, so no failure to read one is worth an audit.
        except Exception:  # noqa: BLE001
            return None

    def save(self, name: str, key: str, result: CheckResult) -> None:
        """Everything the check returned: rows, summary, report data, findings and outputs (frames in the npz)."""
        state = result.outputs
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in [*self.folder.glob(f"{name}-*.json"), *self.folder.glob(f"{name}-*.npz")]:
            old.unlink()  # one checkpoint per check: the newest
        frames = {"rows": result.rows, **{k: v for k, v in state.items() if isinstance(v, pd.DataFrame)}}
        arrays: dict[str, np.ndarray] = {}
        meta = {"name": result.name, "summary": result.summary, "report": result.report, "findings": result.findings,
                "outputs": {k: v for k, v in state.items() if not isinstance(v, pd.DataFrame)},
                "frames": {k: _spec(df, arrays, k) for k, df in frames.items()}}
        stem = self._stem(name, key)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(stem.with_suffix(".npz"), lambda f: f.write(buffer.getvalue()), mode="wb")
        write_text(stem.with_suffix(".json"), json.dumps(meta, default=_plain))  # written last: marks it complete


def _plain(value):
    """numpy scalars and arrays in report data, as JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def _cell(v, *, tag_nan: bool):
    if isinstance(v, float) and math.isnan(v):
        return {"nan": True} if tag_nan else None
    return _plain(v) if isinstance(v, np.generic) else v


def _spec(df: pd.DataFrame, arrays: dict, prefix: str) -> list[dict]:
    """Column specs of df; numeric and boolean columns go to `arrays`, the others into the JSON as lists."""
    out = []
    for i, col in enumerate(df.columns):
        s = df[col]
        spec = {"name": str(col), "dtype": str(s.dtype)}
        if s.dtype.kind in "biuf":
            arrays[f"{prefix}_{i}"] = s.to_numpy()
        else:  # text and other Python values; an object column's NaN is tagged so it comes back as NaN, not None
            spec["values"] = [_cell(v, tag_nan=s.dtype == object) for v in s.tolist()]
        out.append(spec)
    return out


def _frame(spec: list[dict], arrays, prefix: str) -> pd.DataFrame:
    data = {}
    for i, c in enumerate(spec):
        if "values" not in c:
            data[c["name"]] = pd.Series(arrays[f"{prefix}_{i}"], dtype=c["dtype"])
        else:
            values = [float("nan") if isinstance(v, dict) and v.get("nan") else v for v in c["values"]]
            data[c["name"]] = pd.Series(values, dtype=c["dtype"])
    return pd.DataFrame(data, columns=[c["name"] for c in spec])
