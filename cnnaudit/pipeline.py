"""The audit pipeline: load model and data, run the clean evaluation and each check, collect results."""

from __future__ import annotations

import hashlib
import os
import random
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import __version__
from .checks import CheckResult, available, registry, run_order
from .checks.registry import plugin_errors, reads_after
from .config import AuditConfig
from .context import AuditContext
from .data import iter_batches, open_dataset, stratified_subset
from .data.images import image_size
from .distributed import device_for_rank, join, leave
from .errors import AuditError, first_line
from .compat import add_deprecated
from .findings import Finding, rank, unique_ids
from .rootcause import group as group_root_causes
from .model.sources import open_model
from .model.outputs import SINGLE
from .model.wrapper import build_audited_model, resolve_device
from .progress import log, set_budget, time_left
from .results import AuditResult


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _input_size(config: AuditConfig, dataset, sample_ids, declared: dict) -> tuple[int, int]:
    if config.input_size is not None:
        return tuple(config.input_size)
    if declared.get("input_size"):  # the model file's own static input size (ONNX, export, Hugging Face)
        return tuple(declared["input_size"])
    for sid in sample_ids:  # the first readable image's size; unreadable ones become skip records later
        size = image_size(dataset.abspath(dataset.path_of(sid)))
        if size is not None:
            return size
    raise AuditError(f"No file in {str(dataset.root)!r} could be read as an image; check the data folder.")


INPUT_FLAGS = {"train_data": "--train-data DIR (a training set folder, same layouts as DATA)",
               "multilabel": "multi-label data (a 'labels' column in metadata.csv, --label-columns or --task multilabel)"}


def _checks_to_run(config: AuditConfig, multilabel: bool = False) -> list[str]:
    """The checks asked for (default: every registered one whose inputs the audit has) and what they require.
    A check asked for by name without its inputs is an error naming the flag that provides them."""
    given = {"train_data": config.train_data is not None, "multilabel": multilabel}
    if config.checks is None:
        return run_order([n for n in available() if all(given.get(i) for i in registry()[n].inputs)])
    names = run_order(list(config.checks))
    for name in names:
        missing = [i for i in registry()[name].inputs if not given.get(i)]
        if missing:
            raise AuditError(f"the {name} check needs {INPUT_FLAGS.get(missing[0], missing[0])}; add it or leave "
                             f"{name} out of --checks.")
    return names


def run_audit(model: str | Path | nn.Module, data: str | Path, config: AuditConfig | None = None, *,
              unsafe_pickle: bool = False, resume_dir: str | Path | None = None,
              started_at: float | None = None) -> AuditResult:
    """Run the audit. With `resume_dir` (the output folder), each finished check is checkpointed there and
    reused by a later run whose model, data, configuration and earlier checks are unchanged. Started by
    torchrun, each process computes its share of every check (distributed.py) and all return the same
    result; `AuditResult.primary` is true on rank 0 only, which alone should write it. `started_at` (a
    time.time()): where --budget's clock starts when that is before this call (the CLI: the process's start-up)."""
    config = (config or AuditConfig()).validated()  # every setting checked before any work
    device = device_for_rank(resolve_device(config.device))
    shard, created = join(device)
    try:
        if not shard.is_main:
            config = replace(config, quiet=True)
        return _run_audit(model, data, config, device, shard, unsafe_pickle, resume_dir, started_at)
    finally:
        leave(created)


def _run_audit(model, data, config: AuditConfig, device, shard, unsafe_pickle, resume_dir,
               started_at: float | None = None) -> AuditResult:
    t0 = time.perf_counter()
    clock = t0 - max(0.0, time.time() - started_at) if started_at is not None else t0  # --budget's start
    ctx, names, check_options, size = _prepare(model, data, config, device, shard, unsafe_pickle)
    timing = {"load": time.perf_counter() - t0}
    checkpoints = None
    if resume_dir is not None and not ctx.loaded.sha256:
        log("--resume: this model has no file to fingerprint (an endpoint or a function), so nothing is checkpointed "
            "or reused", quiet=config.quiet)
    if resume_dir is not None and ctx.loaded.sha256:
        from .resume import Checkpoints, data_fingerprint
        data_key = data_fingerprint(ctx.dataset, ctx.sample_ids)
        if ctx.train_dataset is not None:  # a training set changed under the same path is new data too
            train = ctx.train_dataset
            data_key += ":" + data_fingerprint(train, train.table["sample_id"].to_numpy())
        checkpoints = Checkpoints(resume_dir, model_sha256=ctx.loaded.sha256, data=data_key,
                                  config={k: v for k, v in config.recorded().items() if k != "options"})
    per_label = {}
    if ctx.dataset.task == "multilabel":
        from .multilabel.audit import run_labels
        if checkpoints is not None:
            log("--resume: multi-label audits are not checkpointed yet; every check runs", quiet=config.quiet)
        results, per_label, errors = run_labels(ctx, names, check_options, timing, _run_checks)
        resumed = []
    else:
        try:
            results, resumed, errors = _run_checks(ctx, names, check_options, checkpoints, timing, started=clock)
        finally:
            set_budget(None, None)  # the next audit in this process has its own (or none)
    timing["total"] = time.perf_counter() - t0
    summary = {"version": __version__, "seed": config.seed, "config": config.recorded(),
               "model": _model_section(ctx, size, device), "data": _data_section(ctx),
               "task": ctx.dataset.task}  # after the keys earlier releases wrote first, in their order
    if per_label:
        from .multilabel.summary import pooled_clean
        summary["clean"] = pooled_clean(per_label)
        summary["per_label"] = {name: {r.name: r.summary for r in rs} for name, rs in per_label.items()}
    for r in results:
        summary[r.name] = r.summary
    findings = unique_ids(rank([f for r in [*results, *(r for rs in per_label.values() for r in rs)]
                                for f in r.findings]))
    # one failure seen by several checks is one root cause; the findings' image sets stay out of the summary
    summary["findings"], summary["root_causes"] = group_root_causes(findings, summary["data"]["n_samples"])
    summary["errors"] = [{"check": e["check"], "error": e["error"]} for e in errors]
    summary["complete"] = not errors
    summary["timing"] = {k: round(v, 3) for k, v in timing.items()}
    if resume_dir is not None:
        summary["timing"]["resumed"] = resumed
    summary["timing"]["processes"] = shard.world_size
    if ctx.plan is not None:
        from .planning import section
        summary["plan"] = section(ctx.plan, ctx.results, timing, timing["total"])
    add_deprecated(summary)  # keys kept one release beside their successors (compat.py)
    if os.environ.get("CNNAUDIT_VALIDATE_SUMMARY"):  # the test suite checks every summary it produces
        from .schema import validate
        validate(summary)
    return AuditResult(summary=summary, results=results, per_label=per_label, primary=shard.is_main,
                       error_log="".join(f"== {e['check']} ==\n{e['traceback']}\n" for e in errors),
                       thumbnails=_thumbnails(ctx, summary["findings"]) if shard.is_main else {})


STRIP_FINDINGS, STRIP_IMAGES = 20, 6  # thumbnails for the first findings only: the report stays small


def _thumbnails(ctx, findings: list[dict]) -> dict[int, str]:
    """The example images of the leading findings, decoded once, as data URIs for the report."""
    from .datauri import thumbnail_uri
    ids = list(dict.fromkeys(s for f in findings[:STRIP_FINDINGS] for s in f["sample_ids"][:STRIP_IMAGES]))
    return {sid: thumbnail_uri(x) for sid, x in ctx.decoded(ids).items()}


def _prepare(model, data, config: AuditConfig, device, shard, unsafe_pickle):
    """Options validated first (a bad option fails in a second), then model and data loaded, the
    options that name data checked against it, the model wrapped, and all processes agreeing on both."""
    # checks named with --checks are validated now; whether the multilabel check may run is known with the data
    names = _checks_to_run(config, multilabel=True) if config.checks is not None else None
    for message in plugin_errors():  # a broken third-party check is skipped, and said so
        log(message, quiet=config.quiet)
    check_options = {name: registry()[name].options_from(config) for name in names or ["clean", *available()]}
    dataset = open_dataset(data, config.classes_file, task=config.task, label_columns=config.label_columns)
    multilabel = dataset.task == "multilabel"
    if config.checks is None or not multilabel:
        names = _checks_to_run(config, multilabel=multilabel)
    if multilabel and "multilabel" not in names:  # a multi-label audit's joint view runs like clean: always
        names.append("multilabel")
        check_options["multilabel"] = registry()["multilabel"].options_from(config)
    if multilabel:
        from .multilabel.thresholds import read_thresholds
        read_thresholds(config.threshold, dataset.classes)  # a bad threshold file fails before the model loads
        from .multilabel.audit import attacked_labels
        attacked_labels(config, dataset.classes)
    loaded = open_model(model, config, device, unsafe_pickle=unsafe_pickle)
    for note in loaded.notes:
        log(note, quiet=config.quiet)
    table = dataset.table if config.limit is None else stratified_subset(dataset.table, config.limit, config.seed)
    sample_ids = table["sample_id"].to_numpy()
    for name in names:
        registry()[name].check_data(check_options[name], dataset, config)
    size = _input_size(config, dataset, sample_ids, loaded.preprocessing)
    audited = _wrap_model(loaded, config, dataset, sample_ids, size, device)
    shard.agree(loaded.sha256, "model file")
    shard.agree(hashlib.sha256(table.to_csv(index=False).encode()).hexdigest(), "data table (files, labels, metadata)")
    log(f"auditing {len(sample_ids)} image(s) of {len(dataset.classes)} "
        f"{'labels (multi-label)' if multilabel else 'classes'} with {loaded.format} model "
        f"on {device} ({', '.join(names)})"
        + (f", sharded over {shard.world_size} processes" if shard.world_size > 1 else ""), quiet=config.quiet)
    train = _train_dataset(config, dataset, shard)
    ctx = AuditContext(config=config, model=audited, loaded=loaded, dataset=dataset, sample_ids=sample_ids,
                       shard=shard, skipped=list(dataset.excluded), train_dataset=train)
    return ctx, names, check_options, size


def _train_dataset(config: AuditConfig, dataset, shard):
    """--train-data, opened like DATA; its classes must be the audited set's (one classes.txt for both)."""
    if config.train_data is None:
        return None
    train = open_dataset(config.train_data, config.classes_file, task=config.task, label_columns=config.label_columns)
    if train.task != dataset.task:
        raise AuditError(f"--train-data {str(config.train_data)!r} is {train.task} data but DATA is {dataset.task}; "
                         "give both the same layout of labels.")
    if train.classes != dataset.classes:
        raise AuditError(f"--train-data {str(config.train_data)!r} has classes {', '.join(train.classes[:6])}"
                         f"{', ...' if len(train.classes) > 6 else ''} but DATA has {', '.join(dataset.classes[:6])}"
                         f"{', ...' if len(dataset.classes) > 6 else ''}; give both the same classes.txt (--classes).")
    shard.agree(hashlib.sha256(train.table.to_csv(index=False).encode()).hexdigest(), "training data table")
    return train


def _run_checks(ctx, names, check_options, checkpoints, timing, started: float | None = None) -> tuple[list, list, list]:
    """Each check in order, on the results it declared (requires, after), reused from a checkpoint when
    one matches; a check that raises becomes a failed result and the others go on. With --budget or --plan,
    the plan is made after clean (planning.py) and a plannable check runs on its share of the images."""
    config, results, resumed, errors, key = ctx.config, [], [], [], ""
    names = list(names)  # --budget re-orders the checks after clean (planning.cheapest_first)
    done: dict[str, float] = {}  # --budget: the seconds each check after clean took (planning.replan)
    set_budget(started if config.budget is not None else None, config.budget)

    def run_one(run_ctx, name):
        seed_everything(config.seed)
        check = registry()[name]
        given = {n: ctx.results[n] for n in (*check.requires, *reads_after(check)) if n in ctx.results}
        return check(check_options[name]).run(run_ctx, given)

    for name in names:
        seed_everything(config.seed)  # each check's randomness is independent of which checks ran before
        t = time.perf_counter()
        check = registry()[name]
        reads = {o: config.options.get(o) for o in check.reads_options}
        run_ctx = ctx
        if ctx.plan is not None and name in ctx.plan["images"]:
            from .planning import restricted
            reads["plan_images"] = ctx.plan["images"][name]  # a checkpoint of another plan is not this one
            run_ctx = restricted(ctx, ctx.plan["order"][:ctx.plan["images"][name]])
        key = checkpoints.key(name, [check_options[name], reads], key) if checkpoints else ""
        result = ctx.shard.broadcast(checkpoints.load(name, key) if checkpoints and ctx.shard.is_main else None)
        if result is not None:
            resumed.append(name)
            log(f"{name}: reused from an earlier run (--resume)", quiet=config.quiet)
        else:
            try:
                result = run_one(run_ctx, name)
            except Exception as exc:
                if name == "clean":  # every other check reads the clean rows: nothing can be audited without them
                    raise
                result = failed_result(name, exc)
                errors.append({"check": name, "error": result.summary["error"], "traceback": result.report["traceback"]})
                log(f"{name}: FAILED ({result.summary['error']}); the other checks go on", quiet=config.quiet)
            if checkpoints and ctx.shard.is_main and not result.summary.get("failed"):
                checkpoints.save(name, key, result)
        if name == "clean":  # the readable samples every later batch is drawn from, and what could not be read
            ctx.clean_rows = result.rows
            ctx.skipped, ctx.clipped = result.outputs["skipped"], result.outputs["clipped"]
            ctx.results[name] = result
            if (config.budget is not None or config.precision is not None or config.plan is not None) \
                    and started is not None:
                from .planning import make_plan
                t_plan = time.perf_counter()
                plan = make_plan(ctx, names, run_one, started, check_options)  # every process calibrates (batches are sharded)
                ctx.plan = ctx.shard.broadcast(plan if ctx.shard.is_main else None)  # and all follow rank 0's plan
                if "infeasible" in ctx.plan:
                    raise AuditError(ctx.plan["infeasible"])
                if ctx.plan["source"] == "budget":
                    from .planning import cheapest_first
                    names[names.index(name) + 1:] = cheapest_first(names[names.index(name) + 1:], ctx.plan)
                timing["plan"] = time.perf_counter() - t_plan
                log("plan: " + ", ".join(f"{n} {k} of {ctx.plan['available']} images"
                                         for n, k in ctx.plan["images"].items()), quiet=config.quiet)
        results.append(result)
        if not result.summary.get("failed"):  # a failed check's (empty) rows are nothing a later check can read
            ctx.results[name] = result
        timing[name] = time.perf_counter() - t
        if ctx.plan is not None and ctx.plan["source"] == "budget" and name != "clean":
            from .planning import replan
            if name not in resumed and not result.summary.get("failed"):  # what it took, measured
                done[name] = timing[name]
            ctx.plan = ctx.shard.broadcast(replan(ctx.plan, names[names.index(name) + 1:], done, started,
                                                  config.budget) if ctx.shard.is_main else None)
            log(f"{name}: {timing[name]:.0f} s; {time_left()}", quiet=config.quiet)
    return results, resumed, errors


def _model_section(ctx, size, device) -> dict:
    audited, loaded, classes = ctx.model, ctx.loaded, ctx.dataset.classes
    return {"path": loaded.path, "sha256": loaded.sha256, "format": loaded.format,
            "num_classes": audited.num_classes, "input_shape": [audited.channels, *size],
            **audited.describe(),
            "positive_class": classes[audited.positive_index] if audited.output_kind in SINGLE else None,
            "preprocessing_from_file": {k: (list(v) if isinstance(v, tuple) else v)
                                        for k, v in loaded.preprocessing.items()},
            **ctx.results["clean"].summary.get("randomness", {}), "device": str(device),
            "gradients": loaded.gradients, "layout": loaded.layout, "backend": loaded.backend or None,
            "queries": queries(audited), "notes": loaded.notes + converter_warnings(loaded.module)}


def queries(audited) -> dict | None:
    """How many images and calls a query-only model answered in the audit (its cost over an endpoint)."""
    from .model.query import QueryModule
    from .multilabel.shared import SharedForward
    inner = audited.model
    if isinstance(inner, SharedForward):  # a multi-label model's outputs, shared between its labels
        inner = inner.module
    if not isinstance(inner, QueryModule):
        return None
    return {"images": inner.images, "calls": inner.calls,
            **{k: getattr(inner.backend, k) for k in ("requests", "retried", "failed_requests")
               if hasattr(inner.backend, k)}}


def converter_warnings(module) -> list[str]:
    """The warnings a converted model (onnx2torch) raised while the audit ran, once each with its count."""
    from .model.onnxfile import QuietModule
    return [f"The model converter warned {n} time(s): {message}" for m in module.modules() if isinstance(m, QuietModule)
            for message, n in sorted(m.warned.items())]


def _data_section(ctx) -> dict:
    dataset = ctx.dataset
    orientation = ctx.clean_rows.get("exif_orientation")  # absent from a clean check resumed from before it existed
    return {"path": str(dataset.root), "layout": dataset.layout, "n_samples": int(len(ctx.clean_rows)),
            "n_files": int(len(dataset.table)), "n_selected": int(len(ctx.sample_ids)),
            "n_skipped": len(ctx.skipped), "skipped": ctx.skipped, "n_clipped": len(ctx.clipped),
            "n_exif_transposed": 0 if orientation is None else int((orientation != 1).sum()),
            "classes": dataset.classes, "attributes": dataset.attributes, "renamed_columns": dataset.renamed}


def failed_result(name: str, exc: Exception) -> CheckResult:
    """A check that raised: its section says why in one sentence; the traceback goes to OUT/errors.log."""
    line = first_line(exc, 400)
    if isinstance(exc, AuditError) or line == type(exc).__name__:
        message = line
    else:
        message = f"{type(exc).__name__}: {line}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return CheckResult(name, pd.DataFrame(), {"failed": True, "error": message}, report={"traceback": tb},
                       findings=[Finding("fail", name, "check_failed", name,
                                         f"The {name} check failed and its results are missing", message)])


def _real_images(config: AuditConfig, dataset, sample_ids, size, keep: list | None = None):
    """The probe's `real_images(channels)`: up to 16 of the audit's own images, decoded at the model's size
    (appended to `keep` when given, for a second look at the outputs)."""
    def real_images(channels: int):
        for batch in iter_batches(dataset, sample_ids[:16], channels=channels, size=size, batch_size=16,
                                  max_pixels=config.max_pixels, workers=config.workers):
            if keep is not None:
                keep.append(batch.x)
            return batch.x
        return None
    return real_images


def _wrap_model(loaded, config: AuditConfig, dataset, sample_ids, size, device):
    """The AuditedModel: flags first, then what the model file declares, then what a probe finds."""
    if dataset.task == "multilabel":
        return _wrap_multilabel(loaded, config, dataset, sample_ids, size, device)
    declared = loaded.preprocessing
    real_images = _real_images(config, dataset, sample_ids, size)
    audited, num_classes = build_audited_model(
        loaded.module.to(device), channels=config.channels or declared.get("channels"), input_size=size,
        mean=config.mean if config.mean is not None else declared.get("mean"),
        std=config.std if config.std is not None else declared.get("std"), device=device,
        output_kind=config.output_kind, batch_hint=loaded.batch_hint, real_images=real_images,
        gradients=loaded.gradients)
    classes = dataset.classes
    if audited.output_kind in SINGLE:
        if len(classes) != 2:
            raise AuditError(f"The model has a single output (a binary head: {audited.output_kind}) but the data "
                             f"has {len(classes)} classes; audit it on two classes (classes.txt) or check the model.")
        positive = config.positive_class if config.positive_class is not None else classes[1]
        if positive not in classes:
            raise AuditError(f"--positive-class {positive!r} is not one of the data's classes ({', '.join(classes)}).")
        audited.positive_index = classes.index(positive)
    elif config.positive_class is not None:
        raise AuditError(f"--positive-class applies to models with a single output; this one has {num_classes} "
                         "outputs, one per class, in the order of classes.txt.")
    if num_classes != len(classes):
        raise AuditError(f"The model has {num_classes} outputs but the data has {len(classes)} classes "
                         f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); "
                         "give the model's class list with --classes or DATA/classes.txt.")
    return audited


MULTILABEL_KINDS = ("auto", "logits", "probabilities")


def _wrap_multilabel(loaded, config: AuditConfig, dataset, sample_ids, size, device):
    """A multi-label model's AuditedModel: K independent outputs, read as logits, or as sigmoid probabilities
    when every probe output lies in [0, 1] (or --output-kind says so); its module shares its outputs between
    the labels' views (multilabel/shared.py)."""
    if config.output_kind not in MULTILABEL_KINDS:
        raise AuditError(f"--output-kind {config.output_kind} does not apply to a multi-label model; give logits or "
                         "probabilities (independent sigmoid outputs), or leave it out.")
    declared = loaded.preprocessing
    probe: list = []
    real_images = _real_images(config, dataset, sample_ids, size, keep=probe)
    try:
        audited, num_classes = _build_multilabel(loaded, config, declared, size, device, real_images)
    except IndexError:  # one output per image: num_outputs reads a second dimension that is not there
        raise AuditError(f"The model has a single output but the data has {len(dataset.classes)} labels; a "
                         "multi-label model returns one output per label, in the order of classes.txt.") from None
    classes = dataset.classes
    if num_classes != len(classes) or audited.output_shape != (len(classes),):
        raise AuditError(f"The model has {num_classes} outputs but the data has {len(classes)} labels "
                         f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); a multi-label model "
                         "returns one output per label, in the order of classes.txt.")
    kind = config.output_kind
    if kind == "auto":
        kind = "logits"
        if probe:
            with torch.no_grad():
                out = audited.raw(probe[0].to(device)).float()
            kind = "probabilities" if bool(((out >= 0) & (out <= 1)).all()) else "logits"
    audited.output_kind = kind
    audited.model.enabled = True
    return audited


def _build_multilabel(loaded, config, declared, size, device, real_images):
    from .multilabel.shared import SharedForward
    return build_audited_model(
        SharedForward(loaded.module.to(device)), channels=config.channels or declared.get("channels"),
        input_size=size, mean=config.mean if config.mean is not None else declared.get("mean"),
        std=config.std if config.std is not None else declared.get("std"), device=device, output_kind="logits",
        batch_hint=loaded.batch_hint, real_images=real_images, gradients=loaded.gradients)
