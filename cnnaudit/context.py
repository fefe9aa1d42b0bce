"""Everything a check may read: the wrapped model, the dataset, the configuration and the clean rows."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, TypeVar

import numpy as np
import pandas as pd
import torch

from .config import AuditConfig
from .data import Dataset, iter_batches
from .data.loader import Batch
from .distributed import SINGLE, Shard
from .model import AuditedModel, LoadedModel
from .progress import Progress

R = TypeVar("R")


@dataclass
class AuditContext:
    config: AuditConfig
    model: AuditedModel
    loaded: LoadedModel
    dataset: Dataset
    sample_ids: np.ndarray  # audited samples (after --limit), in sample_id order
    clean_rows: pd.DataFrame | None = None  # set once the clean evaluation has run
    skipped: list[dict] = field(default_factory=list)
    clipped: list[int] = field(default_factory=list)
    results: dict = field(default_factory=dict)  # name -> CheckResult of the checks that already ran
    shard: Shard = SINGLE  # this process's share of the work under torchrun
    train_dataset: Dataset | None = None  # --train-data, for the checks that declare inputs = ("train_data",)
    # a multi-label audit's labels share decoded batches (multilabel/shared.py); None: decode every time
    batch_cache: object | None = None
    plan: dict | None = None  # --budget / --plan: images per plannable check and their order (planning.py)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def readable_ids(self) -> np.ndarray:
        """Audited samples that decoded; known once the clean evaluation has run."""
        return self.clean_rows["sample_id"].to_numpy() if self.clean_rows is not None else self.sample_ids

    def batches(self, sample_ids=None, *, desc: str = "evaluating", progress: bool = True,
                dataset: Dataset | None = None) -> Iterator[Batch]:
        """Decoded batches of `sample_ids` of the audited set (or of `dataset`, e.g. the training set)."""
        ids = self.readable_ids() if sample_ids is None else np.asarray(sample_ids)
        with Progress(len(ids), desc, quiet=self.config.quiet or not progress) as progress:
            for batch in self._decoded(dataset or self.dataset, ids):
                progress.update(len(batch.sample_ids) + len(batch.skipped))
                yield batch

    def _decoded(self, dataset: Dataset, ids: np.ndarray) -> Iterator[Batch]:
        """iter_batches, or the same batches from the batch cache (each a copy: a check may write into its x),
        labelled with this dataset's labels."""
        source = iter_batches(dataset, ids, channels=self.model.channels, size=self.model.input_size,
                              batch_size=self.config.batch_size, max_pixels=self.config.max_pixels,
                              workers=self.config.workers)
        cache = self.batch_cache
        if cache is None:
            yield from source
            return
        key = cache.key(dataset.root, ids, self.model.channels, tuple(self.model.input_size), self.config.batch_size,
                        self.config.max_pixels)
        labels = dataset.table["label"].to_numpy()  # row position is the sample id
        cached = cache.get(key)
        if cached is not None:
            for b in cached:
                cache.images_reused += len(b.sample_ids)
                yield replace(b, x=b.x.clone(), y=torch.as_tensor(labels[b.sample_ids], dtype=torch.long))
            return
        kept, size = [], 0
        for b in source:
            cache.images_decoded += len(b.sample_ids)
            size += b.x.numel() * b.x.element_size()
            kept = kept if kept is not None and size <= cache.max_bytes else None
            if kept is not None:
                kept.append(b)
            yield replace(b, x=b.x.clone())
        if kept is not None:
            cache.put(key, kept)

    def decoded(self, sample_ids, *, dataset: Dataset | None = None) -> dict[int, torch.Tensor]:
        """The decoded images of `sample_ids` by sample id, in one pass: a gallery's or a strip's examples.
        Images that cannot be decoded are absent."""
        ids = np.asarray(sample_ids)
        if not len(ids):
            return {}
        return {int(sid): x for b in self.batches(ids, progress=False, dataset=dataset)
                for sid, x in zip(b.sample_ids, b.x)}

    def map_batches(self, fn: Callable[[Batch], R], sample_ids=None, *, desc: str, batches_per_call: int = 1,
                    dataset: Dataset | None = None) -> list[R]:
        """fn(batch) for every batch of `sample_ids` (default: the readable ones), in batch order. The work
        of a check's per-sample loop: under torchrun each rank decodes and computes its share of the
        batches (distributed.py) and every rank receives all results, so fn must return picklable,
        device-free values (numpy arrays, rows, data URIs), never tensors on the model's device.
        With `batches_per_call` k, fn gets k consecutive batches as one (the attacks pool survivors)."""
        ids = self.readable_ids() if sample_ids is None else np.asarray(sample_ids)
        size = self.config.batch_size * batches_per_call
        chunks = [ids[start:start + size] for start in range(0, len(ids), size)]
        mine = self.shard.mine(len(chunks))
        my_ids = np.concatenate([chunks[k] for k in mine]) if mine else ids[:0]
        # only the last chunk may be short, so my chunks re-cut by batch_size are the same batches
        batches = self.batches(my_ids, desc=desc, dataset=dataset)
        results = [fn(_merged(group)) for group in iter(lambda: list(itertools.islice(batches, batches_per_call)), [])]
        return self.shard.gather(results, len(chunks))

    def base_rows(self, sample_ids) -> pd.DataFrame:
        """sample_id, path, label, label_name and attribute columns for these samples."""
        return self.dataset.table.set_index("sample_id").loc[np.asarray(sample_ids)].reset_index()


def _merged(batches: list[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    return Batch(np.concatenate([b.sample_ids for b in batches]), torch.cat([b.x for b in batches]),
                 torch.cat([b.y for b in batches]), [s for b in batches for s in b.skipped],
                 [c for b in batches for c in b.clipped],
                 {sid: o for b in batches for sid, o in b.exif_orientation.items()})
