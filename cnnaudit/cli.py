"""Command line: `cnnaudit run MODEL DATA`, `demo`, `compare BASELINE CANDIDATE DATA`, `gate SUMMARY`, `diff OLD NEW`,
`review OUT`.

Exit 0 pass, 1 gate failed, 2 bad input or usage, 3 audit incomplete (a check failed, or an unexpected
error), 130 interrupted (the outputs are staged and renamed into OUT together at the end, io.OutputSet, so
an interrupted run leaves OUT as it was)."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from . import __version__
from .errors import (EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_GATE_FAILED, EXIT_INCOMPLETE, EXIT_INTERRUPTED,
                     EXIT_PASS, AuditError, first_line)


SUMMARY_FAILED = "the {} check(s) failed"


def _add_audit_options(p: argparse.ArgumentParser) -> None:
    from .checks import available
    p.add_argument("--out", default="cnnaudit-out", help="output folder for report.html, summary.json, samples.csv "
                   "(default: %(default)s)")
    p.add_argument("--checks", help=f"comma-separated checks to run besides clean (default: all: "
                   f"{', '.join(available()) or 'none yet'}); 'none' runs only the clean evaluation")
    _add_check_flags(p)
    _add_gate_outputs(p)
    p.add_argument("--limit", help="audit a seeded, class-stratified subset of N images")
    p.add_argument("--seed", default=0, help="random seed (default: %(default)s)")
    p.add_argument("--budget", metavar="SECONDS", help="fit the audit in about this many seconds: clean covers every "
                   "image; the attack, corruption, shift, shortcut and label-issue checks get the share of the images "
                   "(nested, class-stratified) that maximises precision in the time measured here, re-planned after "
                   "each check; a budget the clean pass alone uses up is refused; OUT/plan.json records it")
    p.add_argument("--precision", metavar="HALF_WIDTH", help="the smallest sample per attack, corruption, shift, "
                   "shortcut and label-issue check whose 95%% intervals are at most this wide either side (e.g. 0.02), from a pilot on a few "
                   "images; the time it will take is printed before the work starts")
    p.add_argument("--plan", metavar="PLAN_JSON", help="replay the images per check of an earlier --budget run's "
                   "plan.json exactly")
    p.add_argument("--batch-size", default=64, help="images per batch (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--workers", default=2, help="image-decoding threads (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--model-card", metavar="PATH", help="also write a Markdown model card (Mitchell et al. 2019 "
                   "sections, Hugging Face model-index header) filled with the measured evidence; TODO marks what "
                   "only a person can write")
    p.add_argument("--mlflow", action="store_true", help="log the gateable metrics, report and summary to MLflow "
                   "(extra 'mlflow'; the tracking URI and experiment come from MLFLOW_TRACKING_URI and "
                   "MLFLOW_EXPERIMENT_NAME as usual)")
    p.add_argument("--resume", action="store_true", help="checkpoint each finished check in OUT and reuse the "
                   "checks of an interrupted run when model, data and configuration are unchanged")


def _declared_flags():
    """(check, field, spec, flag, key) for every option flag the registered checks declare."""
    from .checks import registry
    from .options import specs
    for name, check in registry().items():
        if check.options_type is not None:
            for field, spec in specs(check.options_type).items():
                for flag, key in spec.flags():
                    yield name, field, spec, flag, key


def _dest(check: str, field: str, key: str | None) -> str:
    return f"option__{check}__{field}" + (f"__{key}" if key else "")


def _add_check_flags(p: argparse.ArgumentParser) -> None:
    """One argument group per check with options, generated from its declarations (cnnaudit/options.py).
    A plugin's flag that another check already has is left out, and said so in --help."""
    from .checks import registry
    groups, taken = {}, {s for action in p._actions for s in action.option_strings}
    for check, field, spec, flag, key in _declared_flags():
        if check not in groups:
            groups[check] = p.add_argument_group(f"{check} check ({registry()[check].title})")
        if flag in taken:
            groups[check].description = f"{flag} of this check is left out: another option has it"
            continue
        taken.add(flag)
        help_text = spec.help.format(key=key) if key else spec.help
        if spec.choices and spec.many:
            help_text += f"; from: {', '.join(map(str, spec.choices))}"
        metavar = spec.metavar or ("{" + ",".join(map(str, spec.choices)) + "}"
                                   if spec.choices and not spec.many else field.upper())
        if spec.switch:
            groups[check].add_argument(flag, dest=_dest(check, field, key), action="store_true", default=None,
                                       help=help_text.replace("%", "%%"))
            continue
        groups[check].add_argument(flag, dest=_dest(check, field, key), action="append" if spec.repeat else "store",
                                   metavar=metavar, help=help_text.replace("%", "%%"))


def _check_options(args) -> dict:
    """{check: {option: value}} from the flags given (and {} for a check with options but no flag given)."""
    from .checks import registry
    from .options import OptionError, from_text
    out = {name: {} for name, check in registry().items() if check.options_type is not None}
    for check, field, spec, flag, key in _declared_flags():
        raw = getattr(args, _dest(check, field, key), None)
        if raw is None:
            continue
        if spec.switch:
            out[check][field] = True
            continue
        try:
            value = from_text(field, spec, ",".join(raw) if spec.repeat else raw, key)
        except OptionError as exc:
            exc.where = flag
            raise
        if key:
            out[check].setdefault(field, {})[key] = list(value) if spec.many else value
        else:
            out[check][field] = value
    return out


def _flag_of(exc) -> str | None:
    """The flag of an option an OptionError names, if the CLI has one."""
    for check, field, spec, flag, key in _declared_flags():
        if (check, field) == (exc.check, exc.option) and (key is None or key == exc.key or exc.key is None):
            return flag
    return None


def _add_gate_outputs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("release gate")
    g.add_argument("--policy", help="TOML policy of named rules; the exit code is 1 when a 'fail' rule fails")
    g.add_argument("--baseline", help="summary.json of the last release, for max_regression rules")
    g.add_argument("--junit", metavar="PATH", help="write the gate as JUnit XML (one testcase per rule)")
    g.add_argument("--markdown", metavar="PATH", help="write the gate as Markdown (pull-request comment, job summary)")
    g.add_argument("--json", action="store_true", help="print the gate (or summary) as JSON on stdout")


def _add_model_and_data_options(p: argparse.ArgumentParser) -> None:
    """How to load the model(s) and read the images: shared by run and compare."""
    m = p.add_argument_group("model")
    m.add_argument("--arch", help="architecture for a state dict: torchvision:NAME, timm:NAME (extra 'timm') or "
                   "package.module:factory")
    m.add_argument("--num-classes", help="number of outputs for --arch")
    m.add_argument("--unsafe-pickle", action="store_true",
                   help="allow loading a fully pickled nn.Module (this runs code from the file)")
    m.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="model input size (default: the first image's size)")
    m.add_argument("--mean", type=float, nargs="+", help="per-channel normalization mean, applied inside the model")
    m.add_argument("--std", type=float, nargs="+", help="per-channel normalization std, applied inside the model")
    m.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: detected, 3 then 1)")
    m.add_argument("--output-kind", default="auto",
                   choices=("auto", "logits", "probabilities", "log_probabilities", "single_logit",
                            "single_probability"),
                   help="what the model returns (default: detected on probe images; a single output in [0, 1] "
                        "is read as a sigmoid probability, any other single output as a logit)")
    m.add_argument("--positive-class", metavar="NAME", help="for a single-output (binary) model: the class its "
                   "logit or probability means (default: the second class in class order)")
    m.add_argument("--layout", default="auto", choices=("auto", "nchw", "nhwc"),
                   help="the model's input layout (default: read from an ONNX/TFLite/Keras file's static input shape; "
                        "nhwc is channels-last, as tf2onnx exports Keras models)")
    m.add_argument("--query-only", action="store_true",
                   help="audit the model as an attacker who can only query it: no gradients, the adversarial check "
                        "runs the gradient-free Square attack alone (an upper bound on robust accuracy)")
    m.add_argument("--model-fn", metavar="MODULE:FUNCTION", help="audit a Python function (a float32 numpy batch "
                   "N x C x H x W, pixels in [0, 1] unless --mean/--std are given, to scores N x classes) instead of "
                   "a model file; give DATA only")
    e = p.add_argument_group("inference endpoint (MODEL is http://HOST:PORT/v2/models/NAME, Open Inference Protocol)")
    e.add_argument("--request-batch", default=32, help="images per request (default: %(default)s)")
    e.add_argument("--request-timeout", default=30.0, help="seconds before a request is retried "
                   "(default: %(default)s)")
    e.add_argument("--request-retries", default=3, help="retries of a failed request, with exponential "
                   "backoff (default: %(default)s)")
    e.add_argument("--request-concurrency", default=4, help="requests in flight at once "
                   "(default: %(default)s)")
    e.add_argument("--header", action="append", default=[], metavar="NAME=ENV_VAR",
                   help="send header NAME with the value of environment variable ENV_VAR (e.g. "
                        "Authorization=MY_TOKEN); repeatable; values are never logged")
    d = p.add_argument_group("data")
    d.add_argument("--classes", help="class names file, one per line in model output order "
                   "(default: DATA/classes.txt, else sorted folder names)")
    d.add_argument("--task", default="auto", choices=("auto", "multiclass", "multilabel"),
                   help="multilabel: each image has any subset of the classes (default auto: multilabel when "
                        "metadata.csv has a 'labels' column or --label-columns is given)")
    d.add_argument("--label-columns", metavar="A,B,...", help="multi-label data as one 0/1 metadata column per label")
    d.add_argument("--threshold", default="0.5", help="multi-label decision threshold on each label's probability, "
                   "or a TOML/CSV file of per-label thresholds (default: %(default)s)")
    d.add_argument("--labels", metavar="A,B,...", help="multi-label: the labels the adversarial check attacks "
                   "(attacks cost one audit per label; the other checks always cover every label)")
    d.add_argument("--max-pixels", help="skip images larger than this many pixels "
                   "(decompression-bomb guard; default: 89478485)")
    d.add_argument("--train-data", metavar="DIR", help="the training set (same layouts and metadata rules as DATA): "
                   "enables the training check (leakage, representation, out-of-distribution images); its images "
                   "are read for that audit only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnaudit", description="Audit a trained image classifier: "
                                     "clean accuracy, adversarial and corruption robustness, bias and shortcuts.",
                                     epilog=EXIT_CODES_HELP)
    parser.add_argument("--version", action="version", version=f"cnnaudit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="audit MODEL on the images in DATA",
                         description="Audit MODEL on DATA and write report.html, summary.json and samples.csv.",
                         epilog=EXIT_CODES_HELP)
    run.add_argument("model", help="TorchScript file, torch.export program (.pt2), ONNX file (.onnx; extra "
                     "'onnx'), TFLite file (.tflite; extra 'tflite'), Keras 3 file (.keras; extra 'keras'), Hugging "
                     "Face save_pretrained folder (extra 'hf'), state dict in torch or safetensors format (with "
                     "--arch), pickled module (with --unsafe-pickle), or an inference endpoint's URL "
                     "(http://HOST:PORT/v2/models/NAME); left out with --model-fn")
    run.add_argument("data", help="folder: DATA/<class>/<image>, optionally with metadata.csv and "
                     "classes.txt; or metadata.csv with path and label columns")
    _add_model_and_data_options(run)
    _add_audit_options(run)

    demo = sub.add_parser("demo", help="train a tiny digits CNN with planted flaws and audit it",
                          description="Train (and cache) a small CNN on scikit-learn's handwritten digits with a "
                          "planted ruler shortcut and a rare washed-out scanner, then audit it.",
                          epilog=EXIT_CODES_HELP)
    _add_audit_options(demo)
    demo.set_defaults(out="cnnaudit-demo")

    comp = sub.add_parser("compare", help="audit a candidate and a baseline model on the same images, paired",
                          description="Audit BASELINE and CANDIDATE (model files) on DATA with the same seed and "
                          "options and compare them per condition, paired per image (exact McNemar, Holm): OUT gets "
                          "comparison.json, report.html and each model's own outputs in baseline/ and candidate/. "
                          "--policy applies to the candidate. Use it when the old model is at hand; --baseline "
                          "SUMMARY on `run` compares unpaired numbers when it is not.", epilog=EXIT_CODES_HELP)
    comp.add_argument("baseline_model", metavar="BASELINE", help="the released model (a file, as for run, or an endpoint URL)")
    comp.add_argument("candidate_model", metavar="CANDIDATE", help="the model to release (a file, as for run, or an endpoint URL)")
    comp.add_argument("data", help="the images both are audited on (as for run)")
    _add_model_and_data_options(comp)  # the same loading options apply to both models
    _add_audit_options(comp)
    comp.set_defaults(out="cnnaudit-compare")

    gate = sub.add_parser("gate", help="re-judge a finished audit's summary.json against a policy",
                          description="Judge SUMMARY (a summary.json) against --policy without running the model. "
                          "Exit 0 pass, 1 gate failed, 2 bad input.")
    gate.add_argument("summary", help="summary.json of a finished audit")
    _add_gate_outputs(gate)
    gate.add_argument("--comparison", metavar="PATH", help="comparison.json of `cnnaudit compare` (SUMMARY is its "
                      "candidate's), for paired max_regression rules")

    diff = sub.add_parser("diff", help="print metric deltas between two audits",
                          description="Print every gateable metric of OLD and NEW (summary.json files) and its change, "
                          "and the findings that are new or resolved.")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--json", action="store_true", help="print the deltas as JSON: {metrics: [...], findings: "
                      "{new: [...], resolved: [...]}}")

    review = sub.add_parser("review", help="list the findings that need a decision and write a waiver stub",
                            description="Print the fail and warn findings of OUT (an audit's folder, or its "
                            "summary.json) that no waiver accepts, and write a [[waiver]] stub for each to --out "
                            "for a reviewer to fill in (an empty reason or by is an error, so an unfilled stub "
                            "accepts nothing). Exit 0 when nothing needs a decision, 1 when something does, 2 bad "
                            "input.")
    review.add_argument("out_dir", metavar="OUT", help="the OUT folder of a finished audit, or its summary.json")
    review.add_argument("--policy", help="policy (or waivers file) whose [[waiver]]s are honoured; default: the "
                        "waivers the audit's own gate accepted, if it was gated")
    review.add_argument("--out", metavar="FILE", dest="stub",  # not `out`: no crash.log goes into a stub's path
                        help="the stub to write (default: OUT/waivers.toml)")
    review.add_argument("--force", action="store_true", help="replace --out if it exists")
    return parser


def _csv(text: str) -> list[str]:
    """A comma-separated flag value as its non-empty, stripped items."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _config_from_args(args) -> "AuditConfig":
    from .config import AuditConfig
    from .data.images import DEFAULT_MAX_PIXELS
    checks = None
    if args.checks is not None:
        checks = [] if args.checks.strip() == "none" else _csv(args.checks)
    return AuditConfig(
        checks=checks, input_size=tuple(getattr(args, "input_size", None) or ()) or None,
        mean=getattr(args, "mean", None), std=getattr(args, "std", None), channels=getattr(args, "channels", None),
        classes_file=getattr(args, "classes", None), arch=getattr(args, "arch", None),
        num_classes=getattr(args, "num_classes", None), output_kind=getattr(args, "output_kind", "auto"),
        positive_class=getattr(args, "positive_class", None), device=args.device, limit=args.limit, seed=args.seed,
        layout=getattr(args, "layout", "auto"), query_only=getattr(args, "query_only", False),
        model_fn=getattr(args, "model_fn", None), request_batch=getattr(args, "request_batch", 32),
        request_timeout=getattr(args, "request_timeout", 30.0), request_retries=getattr(args, "request_retries", 3),
        request_concurrency=getattr(args, "request_concurrency", 4), headers=tuple(getattr(args, "header", ())),
        train_data=getattr(args, "train_data", None), task=getattr(args, "task", "auto"),
        label_columns=_csv(args.label_columns) if getattr(args, "label_columns", None) else None,
        threshold=getattr(args, "threshold", "0.5"),
        attack_labels=_csv(args.labels) if getattr(args, "labels", None) else None,
        batch_size=args.batch_size, max_pixels=getattr(args, "max_pixels", None) or DEFAULT_MAX_PIXELS,
        budget=getattr(args, "budget", None), precision=getattr(args, "precision", None),
        plan=getattr(args, "plan", None),
        workers=args.workers, quiet=args.quiet, options=_check_options(args)).validated(cli=True)


def _read_json(path: str, flag: str, missing: str, invalid: str = "") -> object:
    """A JSON file a flag names; a missing or unreadable one is one sentence with the fix."""
    import json
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditError(f"{flag} {path!r} does not exist; give {missing}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AuditError(f"{flag} {path!r} is not valid JSON ({exc}){invalid}.") from None


def _read_summary(path: str, flag: str) -> dict:
    data = _read_json(path, flag, "the summary.json of a finished audit", "; give a cnnaudit summary.json")
    if not isinstance(data, dict) or "clean" not in data or "version" not in data:
        raise AuditError(f"{flag} {path!r} is not a cnnaudit summary.json (no 'clean' section).")
    return data


def _read_comparison(path: str) -> dict:
    data = _read_json(path, "--comparison", "the comparison.json of `cnnaudit compare`")
    if not isinstance(data, dict) or not isinstance(data.get("conditions"), list):
        raise AuditError(f"--comparison {path!r} is not a cnnaudit comparison.json (no 'conditions' list).")
    return data


def _load_gate_inputs(args):
    """Policy and baseline are read before any work, so a typo fails in a second, not after the audit."""
    from .gate import load_policy
    if args.baseline and not args.policy:
        raise AuditError("--baseline is only used by a policy's max_regression rules; add --policy.")
    rules = load_policy(args.policy) if args.policy else None
    baseline = _read_summary(args.baseline, "--baseline") if args.baseline else None
    return rules, baseline


def _stage_gate(args, outputs, gate: dict, summary: dict) -> None:
    """--junit and --markdown, written with the audit's own files (io.OutputSet)."""
    from .gate.outputs import junit_xml, markdown
    if args.junit:
        outputs.add_user_path(args.junit, lambda f: f.write(junit_xml(gate, findings=summary.get("findings"))))
    if args.markdown:
        outputs.add_user_path(args.markdown, lambda f: f.write(markdown(gate, summary)))


def _print_gate(args, gate: dict) -> None:
    from .gate.outputs import text
    if not args.json and not getattr(args, "quiet", False):
        print(text(gate))


def _run_gate(args) -> int:
    import json
    from .gate import judge
    if not args.policy:
        raise AuditError("cnnaudit gate needs --policy FILE.")
    rules, baseline = _load_gate_inputs(args)
    from .compat import upgrade
    summary = upgrade(_read_summary(args.summary, "SUMMARY"))  # an earlier release's: its findings get ids
    comparison = _read_comparison(args.comparison) if args.comparison else None
    gate = judge(rules, summary, baseline, comparison)
    summary = _with_waivers(summary, gate)
    if args.junit or args.markdown:
        from .io import OutputSet
        with OutputSet(Path(args.summary).parent) as outputs:  # its staging folder sits beside SUMMARY
            _stage_gate(args, outputs, gate, summary)
            outputs.commit()
    _print_gate(args, gate)
    if args.json:
        print(json.dumps(gate, indent=2))
    if summary.get("errors"):  # judged, but on an incomplete audit: the same exit code as the run that wrote it
        print(f"cnnaudit: audit incomplete: {SUMMARY_FAILED.format(', '.join(e['check'] for e in summary['errors']))}",
              file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_PASS if gate["passed"] else EXIT_GATE_FAILED


def _with_waivers(summary: dict, gate: dict) -> dict:
    """The summary whose findings carry the waivers the gate accepted (summary.json, report, JUnit, Markdown)."""
    from .gate.waivers import mark
    return {**summary, "findings": mark(summary.get("findings") or [], gate.get("waivers") or [])}


def _run_review(args) -> int:
    """The findings that need a decision, printed, and a [[waiver]] stub for each written to --out."""
    from .gate import load_policy
    from .gate.review import needing_decision, stub
    from .gate.waivers import problems, today
    from .io import write_text
    source = Path(args.out_dir)
    path = source if source.suffix == ".json" else source / "summary.json"
    if not path.is_file():
        raise AuditError(f"{str(path)!r} does not exist; give the OUT folder of a finished audit (or its summary.json).")
    summary = _read_summary(str(path), "OUT")
    policy = load_policy(args.policy, need_rules=False) if args.policy else None
    day = today()
    todo, statuses = needing_decision(summary, policy.waivers if policy is not None else None, day)
    target = Path(args.stub) if args.stub else path.parent / "waivers.toml"
    for w in problems({"waivers": statuses}):
        print(f"[WARN] waiver {w['finding']!r} {w['status']}: {w['detail']}")
    if not todo:
        print(f"no finding needs a decision ({len(summary.get('findings') or [])} finding(s); those at fail or warn "
              "are waived)" if summary.get("findings") else "no finding needs a decision")
        return EXIT_PASS
    if target.exists() and not args.force:
        raise AuditError(f"--out {str(target)!r} exists (a stub being filled in?); give --out another path, or "
                         "--force to replace it.")
    print(f"{len(todo)} finding(s) need a decision:")
    for f in todo:
        print(f"  [{f['severity']}] {f['id']}: {f['title']}")
    write_text(target, stub(todo, str(path), day))
    print(f"waiver stub: {target.resolve()} (fill in reason and by for each finding you accept, delete the others, "
          "and add the file's [[waiver]] tables to the policy)")
    return EXIT_GATE_FAILED


def _run_diff(args) -> int:
    import json
    from .gate import diff
    from .gate.metrics import diff_findings
    from .gate.outputs import diff_text
    old, new = _read_summary(args.old, "OLD"), _read_summary(args.new, "NEW")
    rows, findings = diff(old, new), diff_findings(old, new)
    print(json.dumps({"metrics": rows, "findings": findings}, indent=2) if args.json else diff_text(rows, findings))
    return EXIT_PASS


def _check_policy_plan(rules, config, baseline: dict | None, data, *, compare: bool = False) -> None:
    """A rule the planned audit cannot judge fails now, not after the audit (or the two of `compare`)."""
    if rules is None:
        return
    from .data import open_dataset
    from .gate.plan import check_plan
    dataset = open_dataset(data, config.classes_file, task=config.task, label_columns=config.label_columns)
    check_plan(rules, config, baseline, dataset.attributes, compare=compare,
               labels=dataset.classes if dataset.task == "multilabel" else None)


def _check_extra_outputs(args) -> None:
    """Before any model work: MLflow is installed, and every file a flag names can be written there (a
    folder in the way, or a parent that is a file, fails now rather than after the audit)."""
    if args.mlflow:
        from .tracking import require_mlflow
        require_mlflow()
    for flag, value in (("--out", args.out), ("--model-card", args.model_card), ("--junit", args.junit),
                        ("--markdown", args.markdown)):
        path = Path(value) if value else None
        if path is None:
            continue
        if flag != "--out" and path.is_dir():
            raise AuditError(f"{flag} {value!r} is a folder; give a file path such as "
                             f"{'card.md' if flag == '--model-card' else 'gate.xml' if flag == '--junit' else 'gate.md'}.")
        if flag == "--out" and path.exists() and not path.is_dir():
            raise AuditError(f"--out {value!r} is a file; give a folder for the audit's outputs.")
        blocked = next((a for a in [path, *path.parents][1:] if a.exists() and not a.is_dir()), None)
        if blocked is not None:
            raise AuditError(f"{flag} {value!r} cannot be written: {str(blocked)!r} is a file, not a folder.")
    _check_collisions(args)


def _check_collisions(args) -> None:
    """--model-card, --junit and --markdown each need a path of their own: not one of OUT's own files (or,
    under compare, inside OUT's baseline/ and candidate/ audits), not another flag's."""
    if not getattr(args, "out", None):
        return
    from .comparison import FILES as COMPARISON_FILES
    from .results import FILES as AUDIT_FILES  # what each writes into OUT itself
    out = Path(args.out).absolute()
    compare = getattr(args, "command", None) == "compare"
    reserved = {out / n: n for n in (COMPARISON_FILES if compare else AUDIT_FILES)}
    seen: dict[Path, str] = {}
    for flag in ("--model-card", "--junit", "--markdown"):
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if not value:
            continue
        path = Path(value).absolute()
        inside = compare and any(path.is_relative_to(out / sub) for sub in ("baseline", "candidate"))
        if path in reserved or inside:
            raise AuditError(f"{flag} {value!r} is where the audit writes "
                             f"{reserved.get(path, 'its baseline/ and candidate/ audits')}; give {flag} a path "
                             "of its own.")
        if path in seen:
            raise AuditError(f"{flag} and {seen[path]} both name {value!r}; give each a path of its own.")
        seen[path] = flag


def _write_outputs(args, result, summary: dict, gate: dict | None, *, data, comparison: dict | None = None) -> dict:
    """An audit's or a comparison's files, the model card, --junit and --markdown in one output set (OUT
    holds them all, or what it held before), then --mlflow from what was written."""
    from .io import OutputSet
    with OutputSet(args.out) as outputs:
        paths = result.stage(outputs)
        _stage_model_card(args, outputs, summary, paths, data=data, comparison=comparison)
        if gate is not None:
            _stage_gate(args, outputs, gate, summary)
        outputs.commit()
    _log_mlflow(args, summary, paths, comparison=comparison)
    return paths


def _stage_model_card(args, outputs, summary: dict, paths: dict, *, data, comparison: dict | None = None) -> None:
    if args.model_card:
        from .report.model_card import model_card
        text = model_card(summary, data=data, comparison=comparison)
        paths["model_card"] = outputs.add_user_path(args.model_card, lambda f: f.write(text))


def _log_mlflow(args, summary: dict, paths: dict, *, comparison: dict | None = None) -> None:
    """--mlflow, from the written results."""
    if args.mlflow:
        from .tracking import log_to_mlflow
        run_id = log_to_mlflow(summary, paths, comparison=comparison)
        if not args.quiet and not args.json:
            print(f"mlflow run: {run_id}")


def _run_compare(args) -> int:
    from .comparison import compare_results
    from .pipeline import run_audit
    config = _config_from_args(args)
    rules, baseline_summary = _load_gate_inputs(args)
    _check_extra_outputs(args)
    _check_policy_plan(rules, config, baseline_summary, args.data, compare=True)
    if config.budget is not None or config.precision is not None:  # each model would plan its own subsets
        raise AuditError("cnnaudit compare pairs both models image by image, and --budget or --precision would plan "
                         "each model's images on its own timings; plan one model with cnnaudit run --budget and give "
                         "its plan.json to compare with --plan.")
    out = Path(args.out)  # --resume: each model's checks are checkpointed in its own subfolder
    base = run_audit(args.baseline_model, args.data, config, unsafe_pickle=args.unsafe_pickle,
                     resume_dir=out / "baseline" if args.resume else None)
    cand = run_audit(args.candidate_model, args.data, config, unsafe_pickle=args.unsafe_pickle,
                     resume_dir=out / "candidate" if args.resume else None)
    if not (base.primary and cand.primary):
        return EXIT_PASS
    result = compare_results(base, cand, data=args.data)
    gate = None
    if rules is not None:
        from .gate import judge
        # unpaired max_regression rules compare with the baseline model's audit unless --baseline names another
        # summary; paired ones with the comparison
        gate = judge(rules, cand.summary, baseline_summary or base.summary, result.comparison)
        cand.summary["gate"] = result.comparison["gate"] = gate
        cand.summary["findings"] = _with_waivers(cand.summary, gate)["findings"]
    paths = _write_outputs(args, result, cand.summary, gate, data=args.data, comparison=result.comparison)
    c = result.comparison
    if not args.quiet and not args.json:
        print(f"{len(c['regressions'])} significant regression(s), {len(c['improvements'])} significant "
              f"improvement(s) over {len(c['conditions'])} conditions")
        for r in c["regressions"]:
            print(f"  - {r['check']} {r['condition']}: {100 * r['delta']:+.1f} points ({r['n_regressed']} regressed, "
                  f"{r['n_improved']} improved; Holm-adjusted p = {r['p_adjusted']:.2g})")
        print(f"report: {Path(paths['report']).resolve()}")
    if gate is not None:
        _print_gate(args, gate)
    if args.json:
        import json
        print(json.dumps(gate if gate is not None else c, indent=2))
    if not (base.complete and cand.complete):
        return EXIT_INCOMPLETE
    return EXIT_PASS if gate is None or gate["passed"] else EXIT_GATE_FAILED


# `run --model-fn MODULE:FUNCTION DATA` has one positional: this stands in for MODEL (argparse cannot leave a
# leading positional out without mis-assigning positionals given after options)
FUNCTION_MODEL = "<--model-fn>"


def _with_function_model(argv: list[str]) -> list[str]:
    if argv[:1] == ["run"] and any(a == "--model-fn" or a.startswith("--model-fn=") for a in argv):
        return ["run", FUNCTION_MODEL, *argv[1:]]
    return argv


_CALLS = {"main": 0}


def _clock_start() -> float:
    """Where --budget's clock starts: the import of cnnaudit for the process's first command (start-up is the
    user's time too), the call for any later one in the same process (a notebook, a test calling main)."""
    from . import IMPORTED_AT
    return IMPORTED_AT if _CALLS["main"] <= 1 else _CALLS["entered"]


def _run(args) -> int:
    if args.command == "gate":
        return _run_gate(args)
    if args.command == "compare":
        return _run_compare(args)
    if args.command == "diff":
        return _run_diff(args)
    if args.command == "review":
        return _run_review(args)
    import json
    from .pipeline import run_audit
    config = _config_from_args(args)
    rules, baseline = _load_gate_inputs(args)
    _check_extra_outputs(args)
    resume_dir = args.out if args.resume else None
    model, data, unsafe = (None, None, False) if args.command == "demo" else (args.model, args.data, args.unsafe_pickle)
    if args.command == "demo":
        from .demo import prepare_demo
        from .distributed import launched_by_torchrun
        if launched_by_torchrun():
            raise AuditError("cnnaudit demo runs in one process; under torchrun use cnnaudit run MODEL DATA.")
        model, data, demo_options = prepare_demo(quiet=args.quiet)
        for key, value in demo_options.items():
            if key == "options":  # the demo's budgets, unless the user gave their own
                for check, opts in value.items():
                    config.options[check] = {**opts, **config.options.get(check, {})}
            else:
                setattr(config, key, value)
    _check_policy_plan(rules, config, baseline, data)
    result = run_audit(model, data, config, unsafe_pickle=unsafe, resume_dir=resume_dir,
                       started_at=None if args.command == "demo" else _clock_start())
    if not result.primary:
        return EXIT_PASS  # torchrun's other ranks: rank 0 writes, prints and gates
    s = result.summary
    gate = None
    if rules is not None:
        from .gate import judge
        try:
            gate = judge(rules, s, baseline)
        except AuditError:  # whatever the gate decides, the audit's outputs are written
            result.write(args.out)
            raise
        s["gate"] = gate
        s["findings"] = _with_waivers(s, gate)["findings"]
        from .gate.judge import undecided_findings
        s["findings"], s["root_causes"] = undecided_findings(gate, s)
    paths = _write_outputs(args, result, s, gate, data=data)
    if not args.quiet and not args.json:
        ci = s["clean"]["accuracy_ci"]
        print(f"clean accuracy {100 * s['clean']['accuracy']:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] on "
              f"{s['data']['n_samples']} images, {s['data']['n_skipped']} skipped, {len(s['findings'])} finding(s)")
        for f in s["findings"]:
            print(f"  - [{f['severity']}] {f['title']} ({f['id']}" + (", waived)" if f.get("waiver") else ")"))
    if args.command == "demo" and not args.quiet and not args.json:
        from .demo import planted_versus_found
        print("\n".join(planted_versus_found(s)))
    if gate is not None:
        _print_gate(args, gate)
    if args.json:
        print(json.dumps(gate if gate is not None else s, indent=2))
    else:
        print(f"report: {Path(paths['report']).resolve()}")
    if not result.complete:
        print(f"cnnaudit: audit incomplete: {SUMMARY_FAILED.format(', '.join(e['check'] for e in s['errors']))} "
              f"(traceback: {Path(paths['errors']).resolve()}); the other checks' results are written.",
              file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_PASS if gate is None or gate["passed"] else EXIT_GATE_FAILED


def main(argv: list[str] | None = None) -> int:
    import time
    _CALLS["main"] += 1
    _CALLS["entered"] = time.time()
    parser = build_parser()
    args = parser.parse_args(_with_function_model(list(sys.argv[1:] if argv is None else argv)))
    if getattr(args, "model", None) == FUNCTION_MODEL:
        args.model = None
    from .io import COMMITTED
    COMMITTED.clear()  # what this call writes, not an earlier main() in the same process
    try:
        return _run(args)
    except AuditError as exc:
        from .options import OptionError
        if isinstance(exc, OptionError) and exc.check and _flag_of(exc):  # said the way the user gave it
            exc.where = _flag_of(exc)
        print(f"cnnaudit: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if COMMITTED:  # after the outputs were written: they are this audit's, whole
            print(f"cnnaudit: interrupted after this audit's outputs were written to {str(COMMITTED[-1])!r}",
                  file=sys.stderr)
        else:
            print("cnnaudit: interrupted; nothing was written (OUT keeps what it held before)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (`cnnaudit diff A B | head`): what a shell reports for SIGPIPE
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a failure of the audit, not of the input: never exit 1 ("gate failed")
        return _internal_error(args, exc)


def _internal_error(args, exc: Exception) -> int:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = "below"
    out = getattr(args, "out", None)
    try:  # crash.log, not errors.log: OUT may hold an earlier, complete audit, whose errors.log this is not
        if out:
            from .io import write_text
            from .results import CRASH_LOG
            where = str(write_text(Path(out) / CRASH_LOG, tb).resolve())
    except OSError:
        pass
    line = first_line(exc)
    print(f"cnnaudit: error: the audit stopped on an unexpected {type(exc).__name__}"
          f"{'' if line == type(exc).__name__ else ': ' + line} (traceback: {where}); please report it.",
          file=sys.stderr)
    if where == "below":
        print(tb, file=sys.stderr)
    return EXIT_INCOMPLETE
