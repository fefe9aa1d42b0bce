"""The audit's configuration: what was asked for, recorded in summary.json as `config`.

Every field is declared with `option()` (cnnaudit/options.py), like the checks' options, and validated
up front by `AuditConfig.validated()`: a bad seed or batch size is one sentence before the model is
loaded, not a crash after the clean pass. Errors name the setting from Python and the flag from the CLI."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .data.images import DEFAULT_MAX_PIXELS
from .model.outputs import VALUE_KINDS
from .options import OptionError, option, specs, validate

# numpy's legacy seeding (np.random.seed) and every seeded generator here take 32-bit seeds
SEED_MAX = 2**32 - 1
OUTPUT_KINDS = ("auto", *VALUE_KINDS)


def integer(value) -> int:
    """An int, or text of one; never a float or bool silently truncated (int(1.5) is 1)."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(value)
    return int(value)


def finite(value) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(value)
    return v


def device_name(value) -> str:
    text = str(value).strip()
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise ValueError(value)


def text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(value)
    return value


def threshold_spec(value) -> str:
    """--threshold: a probability (a number, or text of one) or the path of a per-label file, as text."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return repr(float(value))
    return text(value).strip()


@dataclass
class AuditConfig:
    checks: list[str] | None = option(None, flag="--checks", help="checks to run (None: every registered one)")
    input_size: tuple[int, int] | None = option(None, flag="--input-size", parse=integer, many=True, positive=True,
                                                expects="expected whole numbers of pixels", help="model input H, W")
    mean: list[float] | None = option(None, flag="--mean", parse=finite, many=True,
                                      expects="expected finite numbers", help="per-channel mean")
    std: list[float] | None = option(None, flag="--std", parse=finite, many=True, positive=True,
                                     expects="expected finite numbers", help="per-channel std")
    channels: int | None = option(None, flag="--channels", choices=(1, 3), help="input channels")
    classes_file: str | None = option(None, flag="--classes", help="class names file")
    arch: str | None = option(None, flag="--arch", parse=text, expects="expected an architecture name",
                              help="architecture for a state dict")
    num_classes: int | None = option(None, flag="--num-classes", parse=integer, minimum=1,
                                     expects="expected a whole number", help="outputs for --arch")
    output_kind: str = option("auto", flag="--output-kind", choices=OUTPUT_KINDS, help="what the model returns")
    layout: str = option("auto", flag="--layout", choices=("auto", "nchw", "nhwc"),
                         help="the model's input layout (auto: read from the file's static input shape)")
    # audit the model as an attacker who can only query it: no gradients, Square is the only attack
    query_only: bool = option(False, flag="--query-only", help="audit without gradients")
    model_fn: str | None = option(None, flag="--model-fn", parse=text, expects="expected package.module:function",
                                  help="a Python function from a numpy batch to scores")
    # an inference endpoint's requests (model/endpoint.py)
    request_batch: int = option(32, flag="--request-batch", parse=integer, minimum=1,
                                expects="expected a whole number of images", help="images per request")
    request_timeout: float = option(30.0, flag="--request-timeout", parse=finite, positive=True,
                                    expects="expected seconds", help="seconds before a request times out")
    request_retries: int = option(3, flag="--request-retries", parse=integer, minimum=0,
                                  expects="expected a whole number", help="retries of a failed request")
    request_concurrency: int = option(4, flag="--request-concurrency", parse=integer, minimum=1,
                                      expects="expected a whole number", help="requests in flight at once")
    # NAME=ENV_VAR: the header's value is read from the environment (and never recorded)
    headers: tuple[str, ...] = option((), flag="--header", many=True, allow_empty=True, help="request headers, NAME=ENV_VAR")
    # multi-label models (cnnaudit/multilabel/): K independent outputs, each label's decision at its threshold
    task: str = option("auto", flag="--task", choices=("auto", "multiclass", "multilabel"),
                       help="auto: multilabel when the data has a labels column or --label-columns")
    label_columns: tuple[str, ...] | None = option(None, flag="--label-columns", many=True,
                                                   help="metadata columns of 0/1, one per label")
    threshold: str = option("0.5", flag="--threshold", parse=threshold_spec, expects="expected a probability like 0.5 or a "
                            "TOML/CSV file of per-label thresholds", help="decision threshold per label")
    attack_labels: tuple[str, ...] | None = option(None, flag="--labels", many=True,
                                                   help="labels the adversarial check attacks (default: every one)")
    # the class a single-output (binary) model's logit means; default: the second
    positive_class: str | None = option(None, flag="--positive-class", help="positive class of a binary head")
    device: str = option("auto", flag="--device", parse=device_name, expects="expected auto, cpu, cuda or cuda:N",
                         help="device")
    limit: int | None = option(None, flag="--limit", parse=integer, minimum=1,
                               expects="expected a positive number of images", help="images audited")
    seed: int = option(0, flag="--seed", parse=integer, minimum=0, maximum=SEED_MAX,
                       expects="expected a whole number", help="random seed")
    batch_size: int = option(64, flag="--batch-size", parse=integer, minimum=1,
                             expects="expected a whole number of images", help="images per batch")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, flag="--max-pixels", parse=integer, minimum=1,
                             expects="expected a whole number of pixels", help="largest image")
    gallery_size: int = option(12, parse=integer, minimum=0, expects="expected a whole number", help="gallery size")
    # --budget: fit the audit in this many seconds by giving the per-image checks subsets (planning.py);
    # --plan: replay the images per check of an earlier plan.json
    budget: float | None = option(None, flag="--budget", parse=finite, positive=True,
                                  expects="expected seconds", help="seconds the audit may take")
    precision: float | None = option(None, flag="--precision", parse=finite, positive=True, maximum=0.5,
                                     expects="expected an interval half-width like 0.02",
                                     help="the 95% interval half-width each planned check should reach")
    plan: str | None = option(None, flag="--plan", parse=text, expects="expected the path of a plan.json",
                              help="an earlier audit's plan.json")
    # a training set folder (same layouts), for the checks that need one
    train_data: str | None = option(None, flag="--train-data", help="training set folder")
    # not part of the measurement, so left out of summary.json's config
    workers: int = option(2, flag="--workers", parse=integer, minimum=1, expects="expected a whole number",
                          help="decoding threads")
    quiet: bool = option(False, help="no progress output")
    # per-check settings, e.g. {"adversarial": {...}}, validated by each check's options class
    options: dict = option(default_factory=dict, help="per-check options")

    def check(self) -> None:
        """What one field's declaration cannot say (options.validate calls it on the new instance)."""
        given = [f for f, v in (("--budget", self.budget), ("--precision", self.precision), ("--plan", self.plan))
                 if v is not None]
        if len(given) > 1:
            raise OptionError("plan" if self.plan is not None else "precision", self.plan or self.precision,
                              f"give one of --budget, --precision and --plan, not {' and '.join(given)}")
        if self.input_size is not None and len(self.input_size) != 2:
            raise OptionError("input_size", self.input_size, "give two numbers, height and width")
        for name in ("mean", "std"):  # recorded as JSON lists
            if getattr(self, name) is not None:
                setattr(self, name, list(getattr(self, name)))

    def validated(self, *, cli: bool = False) -> "AuditConfig":
        """A copy with every field checked and normalized by the validator every check's options go through
        (options.validate); an OptionError names the setting ("the audit setting 'seed'") or, with `cli`,
        its flag ("--seed")."""
        try:
            return validate("audit", AuditConfig, self)
        except OptionError as exc:
            spec = specs(AuditConfig).get(exc.option)
            exc.where = spec.flag if cli and spec is not None and spec.flag else f"the audit setting {exc.option!r}"
            raise

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
