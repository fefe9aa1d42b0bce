"""The audit's configuration: what was asked for, recorded in summary.json as `config`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .data.images import DEFAULT_MAX_PIXELS


@dataclass
class AuditConfig:
    checks: list[str] | None = None  # None: every registered check
    input_size: tuple[int, int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    channels: int | None = None
    classes_file: str | None = None
    arch: str | None = None
    num_classes: int | None = None
    output_kind: str = "auto"  # auto | logits | probabilities | log_probabilities | single_logit | single_probability
    positive_class: str | None = None  # the class a single-output (binary) model's logit means; default: the second
    device: str = "auto"
    limit: int | None = None
    seed: int = 0
    batch_size: int = 64
    max_pixels: int = DEFAULT_MAX_PIXELS
    gallery_size: int = 12
    train_data: str | None = None  # a training set folder (same layouts), for the checks that need one
    # not part of the measurement, so left out of summary.json's config
    workers: int = 2
    quiet: bool = False
    options: dict = field(default_factory=dict)  # per-check settings, e.g. {"adversarial": {...}}

    def recorded(self) -> dict:
        d = asdict(self)
        for key in ("workers", "quiet"):
            d.pop(key)
        if d["input_size"] is not None:
            d["input_size"] = list(d["input_size"])
        for key in ("train_data", "classes_file"):  # paths from Python are recorded as text
            if d[key] is not None:
                d[key] = str(d[key])
        return d
