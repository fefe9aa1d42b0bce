"""The top level of summary.json as typed structures: what CI integrators may rely on.

`Summary` is the root. Each built-in check's section is typed where the check is defined (its class
attribute `section`), so this module never imports a check and can be imported from anywhere.
cnnaudit/schema.py generates the published JSON Schema (cnnaudit/summary.schema.json) from these types:
a key typed `Any` is one the contract promises without saying more about its value, and keys not
declared here may appear in a summary without being part of the contract (except in a `@closed` type).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

from .schema import CI, Constraint, Count, Doc, NotRequired, closed


class ConfigSection(TypedDict):
    """The audit's settings as recorded (AuditConfig.recorded()), options per check included."""
    checks: Any
    seed: Any
    options: Any


class ModelQueries(TypedDict):
    """What a query-only model was asked during the audit."""
    images: Count
    calls: Count


class ModelSection(TypedDict):
    """The audited model: its file, format, outputs and input, and how it was run."""
    path: Any
    sha256: Any
    format: Any
    num_classes: Annotated[int, Constraint(minimum=1)]
    input_shape: Annotated[list[int], Constraint(minItems=3, maxItems=3)]
    output_kind: Any
    pads_batch_of_one: NotRequired[bool]
    gradients: NotRequired[Annotated[bool, Doc(
        "false for a query-only model (onnxruntime, TFLite, a Python function, an endpoint, --query-only): "
        "forward passes only (since 0.6.0)")]]
    layout: NotRequired[Annotated[Literal["nchw", "nhwc"], Doc(
        "the input layout the model takes; nhwc models are fed through a permute (since 0.6.0)")]]
    backend: NotRequired[Annotated[dict[str, Any] | None, Doc(
        "a query-only model's runtime: onnxruntime, tflite, callable or endpoint, with its input and (for an "
        "endpoint) its request settings and header names, never values (since 0.6.0)")]]
    queries: NotRequired[Annotated[ModelQueries | None, Doc(
        "images and calls a query-only model answered during the audit; requests, retried and failed_requests "
        "for an endpoint (since 0.6.0)")]]
    notes: NotRequired[Annotated[list[str], Doc(
        "what was said while loading: folded ONNX constants, a layout, a fallback to onnxruntime and why, "
        "converter warnings with counts (since 0.6.0)")]]


class SkippedFile(TypedDict):
    """A file left out of the audit: it could not be read as an image, or the model failed on it."""
    path: Any
    reason: Any


class DataSection(TypedDict):
    """The audited data set: what was read, what was skipped, its classes and metadata attributes."""
    path: Any
    n_samples: Count
    n_skipped: Count
    n_exif_transposed: NotRequired[Annotated[Count, Doc(
        "images stored rotated or mirrored with an EXIF orientation tag (2-8), turned upright before the audit; "
        "per sample: column exif_orientation of samples.csv")]]
    skipped: list[SkippedFile]
    classes: list[str]
    attributes: Any


@closed
class FindingWaiver(TypedDict):
    """The waiver that accepts a finding ([[waiver]] in the policy, cnnaudit/gate/waivers.py): who, why and
    until when."""
    finding: Annotated[str, Doc("the waiver's finding: an id, a prefix of ids ending at a segment boundary, or "
                                "a glob")]
    reason: Annotated[str, Constraint(minLength=1)]
    by: Annotated[str, Constraint(minLength=1)]
    expires: Annotated[str, Constraint(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), Doc("the last day it holds")]
    until_metric: NotRequired[Annotated[str, Doc("it holds only while this does, e.g. \"effect < 0.4\"")]]


@closed
class Finding(TypedDict):
    """One finding (cnnaudit/findings.py): what a reviewer must look at, ranked; exactly these keys."""
    severity: Literal["fail", "warn", "info"]
    check: Annotated[str, Constraint(minLength=1)]
    kind: Annotated[str, Constraint(minLength=1), Doc(
        "built-in kinds: weak_class, confusion, corruption_cliff, robustness_budget, subgroup_gap, slice, "
        "shortcut, masking, stochastic, data, check_failed, note, shift_sensitivity, near_boundary, weak_label, "
        "sensitivity_gap, undecided; a plugin "
        "may add its own")]
    subject: str
    title: Annotated[str, Constraint(minLength=1)]
    detail: str
    effect: float | None
    ci: CI
    p_adjusted: Annotated[float | None, Constraint(minimum=0, maximum=1)]
    evidence: Annotated[str, Constraint(pattern="^#")]
    sample_ids: list[Count]
    id: Annotated[str, Constraint(minLength=1), Doc(
        "stable across seeds, releases and retrained models: check/kind/subject (subject@label in a multi-label "
        "audit), from what the finding is about, never its numbers; waivers name it (since 0.9.0)")]
    label: NotRequired[Annotated[str, Doc("a multi-label audit: the label whose decision the finding is about; "
                                          "its subject and title start with it (since 0.8.0)")]]
    waiver: NotRequired[Annotated[FindingWaiver, Doc(
        "gated with a policy: the accepted waiver that covers the finding; max_findings does not count it and a "
        "rule that fails only on it is waived (since 0.9.0)")]]
    root_cause: NotRequired[Annotated[str, Constraint(minLength=1), Doc(
        "the id of its root cause (root_causes[].id): the finding that explains most of its images, or its own "
        "id (since 0.9.0)")]]
    n_images: NotRequired[Annotated[Count | None, Doc(
        "how many images it is about (its failing images: e.g. a weak class's misclassified images), which "
        "root causes are grouped by; null for a finding with no image set, e.g. a note (since 0.9.0)")]]


@closed
class RootCause(TypedDict):
    """Findings about largely the same images, grouped under the finding that explains them (rootcause.py)."""
    id: Annotated[str, Doc("the id of the finding it is named after, its most specific: a metadata group or "
                           "artifact, then a discovered slice, then an image-property quartile, then a class")]
    title: Annotated[str, Doc("that finding's title")]
    severity: Annotated[Literal["fail", "warn", "info"], Doc("the worst of its findings'")]
    findings: Annotated[list[str], Doc("the ids of its findings, in rank order")]
    n_images: Annotated[Count | None, Doc("the images of its findings together; null when none has an image set")]


class CheckError(TypedDict):
    """A check that failed: its name and the one-line error (the traceback is in errors.log)."""
    check: Any
    error: Any


class GateWaiver(TypedDict):
    """One [[waiver]] of the policy as judged: accepted (it covers findings), expired, condition_failed (its
    until_metric no longer holds) or stale (it matches no finding); only an accepted one counts."""
    finding: str
    reason: str
    by: str
    expires: Annotated[str, Constraint(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    until_metric: NotRequired[str]
    status: Literal["accepted", "expired", "condition_failed", "stale"]
    findings: Annotated[list[str], Doc("the ids of the findings it matches")]
    detail: str


class GateSection(TypedDict):
    """The verdict of the policy gate (--policy), when one was given."""
    passed: Any
    n_failed: Any
    n_warnings: Any
    rules: Annotated[Any, Doc("a rule a waiver accepted has passed true and waived, the ids of the findings "
                              "that accepted it (since 0.9.0)")]
    waivers: NotRequired[Annotated[list[GateWaiver], Doc("the policy's waivers, each with its status, when it "
                                                         "has any (since 0.9.0)")]]


class Failed(TypedDict):
    """The section of a check that raised: why, in one sentence (the other checks still report)."""
    failed: Literal[True]
    error: str


class PlannedCheck(TypedDict):
    """One check under --budget or --plan: images used of those available, the time it took, the widest
    interval half-width of its results."""
    images: Count
    available: Count
    seconds_per_image: Any
    seconds: Any
    half_width: Any


class PlanSection(TypedDict):
    """--budget / --precision / --plan: where the plan came from and what it gave each plannable check (since 0.8.0)."""
    source: Literal["budget", "precision", "file"]
    budget_s: Any
    available: Count
    calibration: Any
    predicted_s: Any
    total_s: Any
    checks: dict[str, PlannedCheck]
    replanned: NotRequired[Annotated[list[dict[str, Any]], Doc(
        "--budget: after each check, the measured/predicted seconds ratio of the checks so far and the images "
        "it gave the planned checks still to run (since 0.9.0)")]]


class Summary(TypedDict):
    """summary.json. Besides these keys it holds a section per check that ran, under the check's name:
    schema.generate() adds them from the registry (each check's `section`, or the failed form)."""
    version: Annotated[str, Constraint(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+")]
    seed: int
    task: NotRequired[Annotated[Literal["multiclass", "multilabel"], Doc(
        "multilabel: any subset of the classes per image; each label is audited as a binary decision, its "
        "sections under per_label, the joint metrics under multilabel, and clean pools every (image, label) "
        "decision (since 0.8.0)")]]
    per_label: NotRequired[Annotated[dict[str, dict[str, Any]], Doc(
        "a multi-label audit: {label: {check: section}}, each section that of the label's two-class view "
        "(class 1: the label is present), typed as the check's section at the top level (since 0.8.0)")]]
    config: ConfigSection
    model: ModelSection
    data: DataSection
    clean: dict[str, Any]  # the clean check always runs; generate() puts its section's schema here
    findings: list[Finding]
    root_causes: NotRequired[Annotated[list[RootCause], Doc(
        "the findings grouped by the images they are about, worst severity first, then most findings "
        "(since 0.9.0)")]]
    finding_sentences: Annotated[list[str], Doc(
        "deprecated since 0.4.0: findings as sentences, the 0.3 shape of 'findings'")]
    errors: list[CheckError]
    complete: bool
    timing: dict[str, Any]
    gate: NotRequired[GateSection]
    plan: NotRequired[Annotated[PlanSection, Doc(
        "with --budget or --plan: the images each plannable check used and the precision they bought; "
        "OUT/plan.json replays it (since 0.8.0)")]]
