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

from ..markdown import MD_INLINE, escape as escape_markdown
from .render import _pct, _plugin_template_dirs
from .templates import template_dir

TEMPLATE = "model_card.md.j2"


def _ci(interval) -> str:
    return "" if not interval else f" (95% CI {_pct(interval[0])} to {_pct(interval[1])})"


def _md(text) -> str:
    """Untrusted text as inert inline Markdown (markdown.py's escaping, inline characters only): the
    card's text never starts a line, where - # > and digits would matter, so numbers and sentences read
    as written."""
    return escape_markdown(text, MD_INLINE)


def _yaml(text) -> str:
    return json.dumps(str(text))


def model_index(summary: dict) -> list[dict]:
    """The metrics of the `model-index` header: each check's headline numbers (Check.card_metrics), in
    registry order (clean's accuracy and ECE, each budget's worst-case robust accuracy, each corruption's
    mean accuracy, shift consistency, the largest subgroup gap per attribute, a plugin's metrics)."""
    return [m for _, check, section in _ran(summary) for m in check.card_metrics(section)]


def parts(summary: dict) -> list[dict]:
    """The checks that ran, after clean, for the card's quantitative analyses: each renders its own part
    (reports/templates/card/<name>.md.j2) or, without one, the generic part listing its metrics."""
    return [{"name": name, "title": check.title, "section": section, "metrics": check.metrics(section)}
            for name, check, section in _ran(summary) if name != "clean"]


def _ran(summary: dict):
    """(name, check class, section) of every registered check that ran and did not fail, in registry order."""
    from ..checks import registry
    for name, check in registry().items():
        section = summary.get(name) or {}
        if section and not section.get("failed"):
            yield name, check, section


def has_own_part(name: str) -> bool:
    """Whether check `name` has a card part of its own (card/<name>.md.j2); without one the card shows the
    generic part, its title and metrics."""
    try:
        _environment().get_template(f"card/{name}.md.j2")
        return True
    except jinja2.TemplateNotFound:
        return False


def _environment() -> jinja2.Environment:
    # cnnaudit's templates, then those of plugin checks that bring their own folder (and card part)
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(template_dir())),
                                  *(jinja2.FileSystemLoader(d) for d in _plugin_template_dirs())])
    env = jinja2.Environment(loader=loader, autoescape=False,
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
        parts=parts(summary),
        failures=[f for f in findings if f["severity"] in ("fail", "warn")],
        notes=[f for f in findings if f["severity"] not in ("fail", "warn")], c=comparison)
