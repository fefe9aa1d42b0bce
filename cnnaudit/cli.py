"""Command line: `cnnaudit run MODEL DATA`, `demo`, `gate SUMMARY`, `diff OLD NEW`.

Exit 0 pass, 1 gate failed, 2 bad input or usage, 3 audit incomplete (a check failed, or an unexpected
error), 130 interrupted (outputs are written only at the end, each atomically, so an interrupted run
leaves no partial report)."""

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
    a = p.add_argument_group("adversarial check")
    a.add_argument("--norms", help="attack norms, comma-separated: linf,l2 (default: both)")
    a.add_argument("--eps-linf", help="L-inf budgets in [0,1] pixel units, comma-separated; fractions allowed "
                   "(default: 1/255,2/255,4/255,8/255)")
    a.add_argument("--eps-l2", help="L2 budgets in [0,1] pixel units, comma-separated (default: 0.25,0.5,1.0)")
    a.add_argument("--attack-strength", choices=("standard", "thorough"),
                   help="standard: FGSM, PGD-10, APGD-DLR-20, APGD-T-20 on 3 targets (Square runs too when a "
                        "gradient-masking sanity check fails); thorough: PGD-50 and APGD-100 with 3 restarts, "
                        "APGD-CE, APGD-T-100 on 9 targets and Square with 5,000 queries (default: standard)")
    a.add_argument("--attacks", help="the attack cascade, cheapest first, comma-separated from fgsm, pgd, apgd_dlr, "
                   "apgd_ce, apgd_t, square, autoattack (ART's) (default: set by --attack-strength)")
    a.add_argument("--attack-backend", choices=("torch", "art"),
                   help="torch: cnnaudit's FGSM/PGD/APGD (per-sample early stopping, stays on the device; default); "
                        "art: ART's implementations, as a reference (slower)")
    c = p.add_argument_group("corruption check")
    c.add_argument("--corruptions", help="comma-separated from rain, snow, low_light, fog, motion_blur, "
                   "gaussian_noise, jpeg, contrast, brightness, or 'all' (default: rain,snow,low_light)")
    c.add_argument("--severities", help="comma-separated severities 1-5 (default: 1,2,3,4,5)")
    g = p.add_argument_group("subgroups check (bias)")
    g.add_argument("--group-by", help="metadata columns to compare groups of, comma-separated (default: every "
                   "categorical column that is not an artifact)")
    g.add_argument("--intersections", help="attribute pairs to cross, comma-separated, like scanner*site")
    g.add_argument("--min-group-size", type=int, help="smaller groups are 'insufficient data', never ranked "
                   "(default: 30)")
    h = p.add_argument_group("shortcuts check")
    h.add_argument("--artifact", action="append", metavar="NAME",
                   help="a 0/1 metadata column marking an artifact (ruler, marker, watermark), located by NAME_box "
                        "('x0 y0 x1 y1') or NAME_mask (a mask image path); repeatable")
    _add_gate_outputs(p)
    p.add_argument("--limit", type=int, help="audit a seeded, class-stratified subset of N images")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding threads (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--resume", action="store_true", help="checkpoint each finished check in OUT and reuse the "
                   "checks of an interrupted run when model, data and configuration are unchanged")


def _add_gate_outputs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("release gate")
    g.add_argument("--policy", help="TOML policy of named rules; the exit code is 1 when a 'fail' rule fails")
    g.add_argument("--baseline", help="summary.json of the last release, for max_regression rules")
    g.add_argument("--junit", metavar="PATH", help="write the gate as JUnit XML (one testcase per rule)")
    g.add_argument("--markdown", metavar="PATH", help="write the gate as Markdown (pull-request comment, job summary)")
    g.add_argument("--json", action="store_true", help="print the gate (or summary) as JSON on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnaudit", description="Audit a trained image classifier: "
                                     "clean accuracy, adversarial and corruption robustness, bias and shortcuts.",
                                     epilog=EXIT_CODES_HELP)
    parser.add_argument("--version", action="version", version=f"cnnaudit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="audit MODEL on the images in DATA",
                         description="Audit MODEL on DATA and write report.html, summary.json and samples.csv.",
                         epilog=EXIT_CODES_HELP)
    run.add_argument("model", help="TorchScript file, torch.export program (.pt2), ONNX file (.onnx; extra 'onnx'), "
                     "Hugging Face save_pretrained folder (extra 'hf'), state dict in torch or safetensors format "
                     "(with --arch), or pickled module (with --unsafe-pickle)")
    run.add_argument("data", help="folder: DATA/<class>/<image>, optionally with metadata.csv and classes.txt; "
                     "or metadata.csv with path and label columns")
    m = run.add_argument_group("model")
    m.add_argument("--arch", help="architecture for a state dict: torchvision:NAME, timm:NAME (extra 'timm') or "
                   "package.module:factory")
    m.add_argument("--num-classes", type=int, help="number of outputs for --arch")
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
    d = run.add_argument_group("data")
    d.add_argument("--classes", help="class names file, one per line in model output order "
                   "(default: DATA/classes.txt, else sorted folder names)")
    d.add_argument("--max-pixels", type=int, help="skip images larger than this many pixels "
                   "(decompression-bomb guard; default: 89478485)")
    _add_audit_options(run)

    demo = sub.add_parser("demo", help="train a tiny digits CNN with planted flaws and audit it",
                          description="Train (and cache) a small CNN on scikit-learn's handwritten digits with a "
                          "planted ruler shortcut and a rare washed-out scanner, then audit it.",
                          epilog=EXIT_CODES_HELP)
    _add_audit_options(demo)
    demo.set_defaults(out="cnnaudit-demo")

    gate = sub.add_parser("gate", help="re-judge a finished audit's summary.json against a policy",
                          description="Judge SUMMARY (a summary.json) against --policy without running the model. "
                          "Exit 0 pass, 1 gate failed, 2 bad input.")
    gate.add_argument("summary", help="summary.json of a finished audit")
    _add_gate_outputs(gate)

    diff = sub.add_parser("diff", help="print metric deltas between two audits",
                          description="Print every gateable metric of OLD and NEW (summary.json files) and its change.")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--json", action="store_true", help="print the deltas as JSON")
    return parser


def _csv(text: str) -> list[str]:
    """A comma-separated flag value as its non-empty, stripped items."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse_eps(text: str, flag: str) -> list[float]:
    from .budgets import parse_budget
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = parse_budget(part)
        except ValueError:
            raise AuditError(f"{flag} has {part!r}, which is not a number or fraction like 8/255.") from None
        if not value > 0:
            raise AuditError(f"{flag} has {part!r}; budgets must be positive.")
        values.append(value)
    return values


def _adversarial_options(args) -> dict:
    opts = {}
    if args.norms:
        norms = tuple(_csv(args.norms))
        bad = [n for n in norms if n not in ("linf", "l2")]
        if bad or not norms:
            raise AuditError(f"--norms has {(bad or [args.norms])[0]!r}; choose linf, l2 or linf,l2.")
        opts["norms"] = norms
    eps = {}
    if args.eps_linf:
        eps["linf"] = _parse_eps(args.eps_linf, "--eps-linf")
    if args.eps_l2:
        eps["l2"] = _parse_eps(args.eps_l2, "--eps-l2")
    if eps:
        opts["eps"] = eps
    if args.attack_strength:
        opts["attack_strength"] = args.attack_strength
    if args.attack_backend:
        opts["backend"] = args.attack_backend
    if args.attacks:
        opts["attacks"] = _csv(args.attacks)
    return opts


def _corruption_options(args) -> dict:
    opts = {}
    if args.corruptions:
        opts["corruptions"] = tuple(_csv(args.corruptions))
    if args.severities:
        try:
            opts["severities"] = tuple(int(v) for v in _csv(args.severities))
        except ValueError:
            raise AuditError(f"--severities has {args.severities!r}; give integers 1 to 5 like 1,3,5.") from None
    return opts


def _subgroup_options(args) -> dict:
    opts = {}
    if args.group_by:
        opts["group_by"] = tuple(_csv(args.group_by))
    if args.intersections:
        opts["intersections"] = tuple(_csv(args.intersections))
    if args.min_group_size is not None:
        opts["min_group_size"] = args.min_group_size
    return opts


def _config_from_args(args) -> "AuditConfig":
    from .config import AuditConfig
    from .data.images import DEFAULT_MAX_PIXELS
    checks = None
    if args.checks is not None:
        checks = [] if args.checks.strip() == "none" else _csv(args.checks)
    if args.batch_size < 1:
        raise AuditError("--batch-size must be at least 1.")
    if args.limit is not None and args.limit < 1:
        raise AuditError("--limit must be a positive number of images.")
    return AuditConfig(
        checks=checks, input_size=tuple(getattr(args, "input_size", None) or ()) or None,
        mean=getattr(args, "mean", None), std=getattr(args, "std", None), channels=getattr(args, "channels", None),
        classes_file=getattr(args, "classes", None), arch=getattr(args, "arch", None),
        num_classes=getattr(args, "num_classes", None), output_kind=getattr(args, "output_kind", "auto"),
        positive_class=getattr(args, "positive_class", None), device=args.device, limit=args.limit, seed=args.seed,
        batch_size=args.batch_size, max_pixels=getattr(args, "max_pixels", None) or DEFAULT_MAX_PIXELS,
        workers=args.workers, quiet=args.quiet, options={"adversarial": _adversarial_options(args),
                                                       "corruption": _corruption_options(args),
                                                       "subgroups": _subgroup_options(args),
                                                       "shortcuts": {"artifacts": tuple(args.artifact)}
                                                       if args.artifact else {}})


def _read_summary(path: str, flag: str) -> dict:
    import json
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditError(f"{flag} {path!r} does not exist; give the summary.json of a finished audit.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AuditError(f"{flag} {path!r} is not valid JSON ({exc}); give a cnnaudit summary.json.") from None
    if not isinstance(data, dict) or "clean" not in data or "version" not in data:
        raise AuditError(f"{flag} {path!r} is not a cnnaudit summary.json (no 'clean' section).")
    return data


def _load_gate_inputs(args):
    """Policy and baseline are read before any work, so a typo fails in a second, not after the audit."""
    from .gate import load_policy
    if args.baseline and not args.policy:
        raise AuditError("--baseline is only used by a policy's max_regression rules; add --policy.")
    rules = load_policy(args.policy) if args.policy else None
    baseline = _read_summary(args.baseline, "--baseline") if args.baseline else None
    return rules, baseline


def _emit_gate(args, gate: dict, summary: dict) -> None:
    from .gate.outputs import junit_xml, markdown, text
    from .io import write_text
    if args.junit:
        write_text(Path(args.junit), junit_xml(gate))
    if args.markdown:
        write_text(Path(args.markdown), markdown(gate, summary))
    if not args.json and not getattr(args, "quiet", False):
        print(text(gate))


def _run_gate(args) -> int:
    import json
    from .gate import judge
    if not args.policy:
        raise AuditError("cnnaudit gate needs --policy FILE.")
    rules, baseline = _load_gate_inputs(args)
    summary = _read_summary(args.summary, "SUMMARY")
    gate = judge(rules, summary, baseline)
    _emit_gate(args, gate, summary)
    if args.json:
        print(json.dumps(gate, indent=2))
    if summary.get("errors"):  # judged, but on an incomplete audit: the same exit code as the run that wrote it
        print(f"cnnaudit: audit incomplete: {SUMMARY_FAILED.format(', '.join(e['check'] for e in summary['errors']))}",
              file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_PASS if gate["passed"] else EXIT_GATE_FAILED


def _run_diff(args) -> int:
    import json
    from .gate import diff
    from .gate.outputs import diff_text
    rows = diff(_read_summary(args.old, "OLD"), _read_summary(args.new, "NEW"))
    print(json.dumps(rows, indent=2) if args.json else diff_text(rows))
    return EXIT_PASS


def _run(args) -> int:
    if args.command == "gate":
        return _run_gate(args)
    if args.command == "diff":
        return _run_diff(args)
    import json
    from .pipeline import run_audit
    config = _config_from_args(args)
    rules, baseline = _load_gate_inputs(args)
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
    if rules is not None:  # a rule the planned audit cannot judge fails now, not after the audit
        from .data import open_dataset
        from .gate.plan import check_plan
        check_plan(rules, config, baseline, open_dataset(data, config.classes_file).attributes)
    result = run_audit(model, data, config, unsafe_pickle=unsafe, resume_dir=resume_dir)
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
    paths = result.write(args.out)
    if not args.quiet and not args.json:
        ci = s["clean"]["accuracy_ci"]
        print(f"clean accuracy {100 * s['clean']['accuracy']:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] on "
              f"{s['data']['n_samples']} images, {s['data']['n_skipped']} skipped, {len(s['findings'])} finding(s)")
        for f in s["findings"]:
            print(f"  - {f}")
    if gate is not None:
        _emit_gate(args, gate, s)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except AuditError as exc:
        print(f"cnnaudit: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("cnnaudit: interrupted", file=sys.stderr)
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
    try:
        if out:
            from .io import write_text
            where = str(write_text(Path(out) / "errors.log", tb).resolve())
    except OSError:
        pass
    line = first_line(exc)
    print(f"cnnaudit: error: the audit stopped on an unexpected {type(exc).__name__}"
          f"{'' if line == type(exc).__name__ else ': ' + line} (traceback: {where}); please report it.",
          file=sys.stderr)
    if where == "below":
        print(tb, file=sys.stderr)
    return EXIT_INCOMPLETE
