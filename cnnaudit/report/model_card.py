"""A Markdown model card (Mitchell et al. 2019, "Model Cards for Model Reporting", FAT* '19) filled with
what the audit measured: the nine sections of the paper, each with the audit's evidence where it has some
and a TODO where only a person can write it (intended use, the people who built it, ethics). The header is
the YAML front matter the Hugging Face Hub reads (`model-index`: task, dataset, metrics), so the card can
be the model repository's README.md.

A pure function of summary.json (and comparison.json for `cnnaudit compare`): it reads results, never
recomputes them. Untrusted text (paths, class names, metadata values, finding titles) is escaped so it
stays inert Markdown; YAML strings are written as JSON strings, which YAML reads as double-quoted scalars.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from ..gate.outputs import MD_INLINE
from ..gate.outputs import _md as escape_markdown
from .render import _pct
from .templates import template_dir

TEMPLATE = "model_card.md.j2"


def _ci(interval) -> str:
    return "" if not interval else f" (95% CI {_pct(interval[0])} to {_pct(interval[1])})"


def _md(text) -> str:
    """Untrusted text as inert inline Markdown (gate/outputs.py's escaping, inline characters only): the
    card's text never starts a line, where - # > and digits would matter, so numbers and sentences read
    as written."""
    return escape_markdown(text, MD_INLINE)


def _yaml(text) -> str:
    return json.dumps(str(text))


def model_index(summary: dict) -> list[dict]:
    """The metrics of the `model-index` header: clean accuracy and ECE, each budget's worst-case robust
    accuracy, each corruption's mean accuracy, the largest subgroup gap per attribute."""
    from ..gate.metrics import catalog
    metrics = catalog(summary)
    out = []
    if "clean.accuracy" in metrics:
        out.append({"type": "accuracy", "name": "Clean accuracy", "value": metrics["clean.accuracy"]})
    if "clean.ece" in metrics:
        out.append({"type": "expected_calibration_error", "name": "Expected calibration error (15 bins)",
                    "value": metrics["clean.ece"]})
    for r in (summary.get("adversarial") or {}).get("results", []):
        if r.get("attack") == "worst_case" and r.get("robust_accuracy") is not None:
            out.append({"type": "robust_accuracy", "value": r["robust_accuracy"],
                        "name": f"Robust accuracy, worst case, {r['norm']} eps {r['eps_label']}"})
    for corruption, value in ((summary.get("corruption") or {}).get("mean") or {}).items():
        out.append({"type": "corruption_accuracy", "name": f"Accuracy under {corruption} (mean over severities)",
                    "value": value})
    shift = summary.get("shift") or {}
    if shift.get("consistency") is not None:
        out.append({"type": "shift_consistency", "name": f"Shift consistency (two random shifts of at most "
                    f"{shift['max_shift']} px)", "value": shift["consistency"]})
    for attr, e in ((summary.get("subgroups") or {}).get("attributes") or {}).items():
        if e.get("gap") is not None:
            out.append({"type": "subgroup_accuracy_gap", "name": f"Largest accuracy gap by {attr}", "value": e["gap"]})
    return out


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), autoescape=False,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(md=_md, pct=_pct, ci=_ci, yaml=_yaml)
    return env


def model_card(summary: dict, *, data: str | Path | None = None, comparison: dict | None = None) -> str:
    """The card's Markdown. `data`: the audited folder or CSV (named as the evaluation data); `comparison`:
    a comparison.json whose candidate is `summary`'s model (adds "Changes since the baseline")."""
    from .. import __version__
    from ..checks import registry
    sections = {name: summary.get(name) or {} for name in registry()}
    ok = {name: bool(sec) and not sec.get("failed") for name, sec in sections.items()}
    model = summary.get("model") or {}
    name = Path(str(model.get("path") or "model")).stem or "model"
    data_name = Path(str(data)).name if data else "audited images"
    findings = summary.get("findings") or []
    return _environment().get_template(TEMPLATE).render(
        s=summary, sec=sections, ok=ok, ran=[check for check in ok if ok[check]],
        attrs=(sections.get("subgroups", {}).get("attributes") or {}) if ok.get("subgroups") else {},
        model=model, name=name, data_name=data_name, version=__version__, metrics=model_index(summary),
        failures=[f for f in findings if f["severity"] in ("fail", "warn")],
        notes=[f for f in findings if f["severity"] not in ("fail", "warn")], c=comparison)
