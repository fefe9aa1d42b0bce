"""Bias: who does the model fail, and is the evidence strong enough to act on?

Inputs: the clean rows (and the rows of the adversarial and corruption checks when they ran), the
metadata attributes, the decoded images. Procedure:
  1. Per-sample image properties (brightness, contrast, sharpness, stored size, dHash, pixel hash): the
     rows of this check (condition `properties`).
  2. Per attribute (`--group-by`, default every categorical attribute that is not an artifact) and
     requested intersections: per-group n, accuracy with a Wilson interval, per-class TPR and FPR, mean
     confidence and ECE; the gap and ratio between groups with bootstrap intervals and a Fisher-exact
     p-value, Holm-adjusted across attributes (bias/groups.py). Groups under `--min-group-size` are
     "insufficient data" and never ranked.
  3. The data audit (bias/data_audit.py): balance, representation, association, duplicates, slices.
  4. Robustness disparity: the same gap analysis for every attack budget and corruption severity, from
     the rows those checks produced (Holm-adjusted as one family).
Outputs: summary `subgroups` {attributes, data_audit, disparity}; nothing here re-runs the model.
"""

from __future__ import annotations

from typing import Any, TypedDict

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import aggregate
from ..schema import CI, Count, Share
from ..bias import data_audit, slices as slices_mod
from ..bias.groups import gap, group_accuracy, group_metrics, holm_verdicts, with_intersections
from ..bias.properties import image_properties, thumbnails
from ..model.embeddings import embed_batch, embedding_layer, stack
from ..data.images import image_size
from ..errors import AuditError
from ..findings import Finding, fmt_p, id_prefix
from ..rules import NUMBER, RuleKind, result, selected, without_evidence
from ..options import OptionError, option
from ..datauri import thumbnail_uri, to_data_uri
from .base import Check, CheckResult
from .outcomes import outcome_rows
from .registry import register

def _pair(text: str) -> str:
    parts = [p.strip() for p in str(text).split("*")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(text)
    return "*".join(parts)


@dataclass
class SubgroupOptions:
    group_by: tuple[str, ...] | None = option(None, flag="--group-by", many=True,
                                              help="metadata columns to compare groups of, comma-separated "
                                                   "(default: every categorical column that is not an artifact)")
    intersections: tuple[str, ...] = option((), flag="--intersections", many=True, parse=_pair, allow_empty=True,
                                            expects="write two attribute names joined by '*', like scanner*site",
                                            help="attribute pairs to cross, comma-separated, like scanner*site")
    min_group_size: int = option(30, flag="--min-group-size", parse=int, minimum=1, expects="give a whole number",
                                 help="smaller groups are 'insufficient data', never ranked (default: 30)")

    def pairs(self) -> list[tuple[str, str]]:
        return [tuple(p.strip() for p in pair.split("*")) for pair in self.intersections]

    def check_data(self, dataset, config) -> list[str]:
        """The attribute columns to group by; an unknown name is an error naming the columns there are.
        Names of metadata columns the dataset renamed away from internal names follow the rename."""
        if dataset.renamed:
            new = dataset.renamed
            self.group_by = None if self.group_by is None else tuple(new.get(a, a) for a in self.group_by)
            self.intersections = tuple("*".join(new.get(a, a) for a in pair) for pair in self.pairs())
        columns = f"not a metadata column (columns: {', '.join(dataset.attributes) or 'none: no metadata.csv'})"
        for name in self.group_by or []:
            if name not in dataset.attributes:
                raise OptionError("group_by", name, columns)
        for pair in self.intersections:
            for name in pair.split("*"):
                if name not in dataset.attributes:
                    raise OptionError("intersections", name, columns)
        if self.group_by is not None:
            return list(self.group_by)
        artifacts = set(_artifacts(config))  # compared by the shortcuts check, not ranked as groups
        return [a for a in aggregate.group_columns(dataset.table, dataset.attributes) if a not in artifacts]


def _artifacts(config) -> list[str]:
    return list(config.options.get("shortcuts", {}).get("artifacts", []) or [])


def _judge_gap(rule, sub: dict) -> dict:
    """max_subgroup_gap: the largest accuracy gap over the attributes (or the one named); with
    only_significant, a gap counts only when the test says it is real."""
    p, attrs = rule.params, sub["attributes"]
    names = selected(rule, p.get("attribute"), attrs, "attribute", "group by", "add it with --group-by")
    only_sig = p.get("only_significant", False)
    measured, offending = _gaps(rule, sub)
    worst_attr = max(measured, key=measured.get) if measured else None
    worst = measured.get(worst_attr)
    insufficient = [a for a in names if a not in measured]
    detail = (f"largest gap {worst:.4f} ({worst_attr})" if worst is not None else "no attribute with two groups "
              "large enough to compare") + f" (maximum {p['threshold']}" + (", significant gaps only)" if only_sig
                                                                           else ")")
    if offending:
        detail += f"; over the limit: {', '.join(offending)}"
    if insufficient:
        detail += f"; insufficient data: {', '.join(insufficient)}"
    metric = f"subgroups.gap.{worst_attr or names[0] if names else '-'}"
    if not offending and worst is None:  # a gap nobody could measure is not a small gap
        why = detail + ("" if names else "; no attribute to compare")
        return without_evidence(rule, metric, worst, p["threshold"], why)
    return result(rule, metric, worst, p["threshold"], not offending, detail)


def _gaps(rule, sub: dict) -> tuple[dict[str, float], list[str]]:
    """({attribute: gap} of those measured, the attributes over the rule's limit)."""
    p, attrs = rule.params, sub["attributes"]
    names = selected(rule, p.get("attribute"), attrs, "attribute", "group by", "add it with --group-by")
    measured = {a: attrs[a]["gap"] for a in names if attrs[a]["gap"] is not None}
    return measured, [a for a, g in measured.items() if g > p["threshold"]
                      and (attrs[a]["significant"] or not p.get("only_significant", False))]


def _gap_about(rule, sub: dict) -> list[str]:
    """A gap over the limit is about the attribute's subgroup_gap finding (waivers)."""
    return [id_prefix("subgroups", "subgroup_gap", a) for a in _gaps(rule, sub)[1]]


def _plan_gap(rule, opts, attributes) -> None:
    named = rule.params.get("attribute")
    if named is not None and named.split("*")[0] not in attributes:
        raise AuditError(f"rule {rule.name!r} names attribute {named!r}, which the data does not have "
                         f"(metadata columns: {', '.join(attributes) or 'none'}); fix the rule.")


# --- summary.json's `subgroups` section (Check.section: the published schema is generated from it) ---
class DiscoveredSubgroup(TypedDict):
    """A slice found from image features (no metadata needed) where the model does worse, confirmed (or
    not) on images held out from its discovery."""
    name: Any
    n: Count
    accuracy: Share
    accuracy_ci: CI
    rest_accuracy: Share
    p_adjusted: float | None
    confirmed: Any
    description: Any
    paths: Any


class SubgroupsSection(TypedDict):
    """Bias: the accuracy gap between the groups of each metadata attribute, and discovered slices."""
    attributes: Any
    discovered: list[DiscoveredSubgroup]


@register
class SubgroupCheck(Check):
    name = "subgroups"
    title = "Bias: subgroups and data"
    template = "sections/subgroups.html.j2"
    section = SubgroupsSection
    reads_outcomes = True  # the outcomes of the checks that ran (Check.outcomes) give per-group robustness disparity
    finding_kinds = ("subgroup_gap", "slice")
    options_type = SubgroupOptions
    rule_kinds = (RuleKind("max_subgroup_gap", _judge_gap, plan=_plan_gap, required={"threshold": NUMBER},
                           optional={"attribute": (str,), "only_significant": (bool,), "on_insufficient": (str,)},
                           evidence_key="on_insufficient", needs="--checks subgroups", about=_gap_about),)
    reads_options = ("shortcuts",)  # artifacts are not ranked as groups
    lower_is_better = ("subgroups.gap.",)

    @staticmethod
    def verdicts(section: dict) -> dict[str, str]:
        out = {f"gap by {attr}": str(e["verdict"]) for attr, e in (section.get("attributes") or {}).items()
               if e.get("verdict") is not None}
        out["discovered slices"] = f"{sum(bool(s.get('confirmed')) for s in section.get('discovered') or [])} confirmed"
        return out

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:
        return {f"subgroups.gap.{attr}": e["gap"] for attr, e in (section.get("attributes") or {}).items()
                if e.get("gap") is not None}

    @staticmethod
    def card_metrics(section) -> list[dict]:
        return [{"type": "subgroup_accuracy_gap", "name": f"Largest accuracy gap by {attr}", "value": e["gap"]}
                for attr, e in (section.get("attributes") or {}).items() if e.get("gap") is not None]

    def run(self, ctx, results) -> CheckResult:
        opts = self.opts
        attrs = opts.check_data(ctx.dataset, ctx.config)
        seed, min_size = ctx.config.seed, int(opts.min_group_size)
        rows, thumbs, embeddings, source = self._property_rows(ctx)
        clean = ctx.clean_rows.merge(rows[["sample_id", *PROPERTY_COLUMNS]], on="sample_id")
        discovered, rows["slice"] = self._discover(ctx, clean, rows, embeddings, attrs)
        clean, inter = with_intersections(clean, opts.pairs())
        attributes = {}
        for i, attr in enumerate([*attrs, *inter]):
            groups = group_metrics(clean, attr, ctx.classes, min_size)
            attributes[attr] = {"groups": groups, **gap(groups, seed=seed + i)}
        holm_verdicts(list(attributes.values()))
        audited = ctx.dataset.table.set_index("sample_id").loc[ctx.sample_ids].reset_index()
        slices = data_audit.slices(clean, min_size)
        audit = {
            "n_images": int(len(audited)),
            "class_balance": data_audit.class_balance(audited, ctx.classes),
            "missing_metadata": data_audit.missing_metadata(audited, ctx.dataset.attributes),
            # artifacts are not groups to rank, but an artifact that comes with one class is the classic shortcut
            "representation": {a: data_audit.representation(audited, a, ctx.classes, min_size)
                               for a in dict.fromkeys([*attrs, *(c for c in _artifacts(ctx.config)
                                                                 if c in ctx.dataset.attributes)])},
            "duplicates": data_audit.duplicates(clean, thumbs[clean["sample_id"].map(
                {sid: i for i, sid in enumerate(rows["sample_id"])}).to_numpy()]),
            "slices": [{k: v for k, v in s.items() if k != "sample_ids"} for s in slices],
        }
        disparity = self._disparity(ctx, results, [*attrs, *inter], opts, min_size)
        summary = {"min_group_size": min_size, "attributes": attributes, "data_audit": audit, "disparity": disparity,
                   "discovered": [{k: v for k, v in d.items() if k not in ("sample_ids", "members")}
                                  for d in discovered],
                   "discovered_from": source}
        report = {"slice_examples": self._slice_examples(ctx, clean, slices),
                  "discovered_examples": self._discovered_examples(ctx, discovered)}
        return CheckResult(self.name, rows, summary, report=report,
                           findings=_findings(summary, ctx.clean_rows, discovered, slices))

    def _property_rows(self, ctx) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, str]:
        """Property rows, dHash thumbnails and embeddings (and their source) of every readable image, in
        one decoding pass."""
        layer = embedding_layer(ctx.loaded)

        def measure(batch):
            sizes = [image_size(ctx.dataset.abspath(ctx.dataset.path_of(s))) or (0, 0) for s in batch.sample_ids]
            props = image_properties(batch.x)
            return (pd.DataFrame({"sample_id": batch.sample_ids, **props,
                                  "height": [s[0] for s in sizes], "width": [s[1] for s in sizes]}),
                    thumbnails(batch.x), embed_batch(ctx.model, layer, batch.x, ctx.device, props))

        done = ctx.map_batches(measure, desc="subgroups")
        props = pd.concat([p for p, _, _ in done], ignore_index=True)
        thumbs = [t for _, t, _ in done]
        embeddings, source = stack([e for _, _, e in done])
        props["aspect"] = (props["width"] / props["height"].where(props["height"] > 0)).round(6)
        for col in ("brightness", "contrast", "sharpness"):
            props[col] = props[col].astype(float).round(6)
        rows = ctx.base_rows(props["sample_id"]).assign(check=self.name, condition="properties")
        return rows.join(props.drop(columns="sample_id")), np.concatenate(thumbs), embeddings, source

    def _discover(self, ctx, clean: pd.DataFrame, rows: pd.DataFrame, embeddings: np.ndarray, attrs) -> tuple:
        """Slices from the embeddings (bias/slices.py), described; and each property row's slice name."""
        position = {sid: i for i, sid in enumerate(rows["sample_id"])}
        order = clean["sample_id"].map(position).to_numpy()
        labels, candidates = slices_mod.discover(embeddings[order], clean["correct"].to_numpy(),
                                                 seed=ctx.config.seed)
        found, names = [], np.full(len(rows), "", dtype=object)
        for i, c in enumerate(candidates, 1):
            positions = c.pop("members")
            members = clean.iloc[positions]
            name = f"slice {i}"
            names[members["sample_id"].map(position).to_numpy()] = name
            errors = aggregate.most_confident_errors(members, 6)
            examples = [*errors["sample_id"], *members["sample_id"][~members["sample_id"].isin(errors["sample_id"])]][:6]
            found.append({"name": name, **{k: v for k, v in c.items() if k != "component"},
                          "description": slices_mod.describe(positions, clean, ctx.classes,
                                                             ["brightness", "contrast", "sharpness", "height", "width"],
                                                             attrs),
                          "paths": [ctx.dataset.path_of(int(s)) for s in examples],
                          "sample_ids": [int(s) for s in examples],
                          "members": members["sample_id"].astype(int).tolist()})  # both halves; not written
        return found, names

    def _discovered_examples(self, ctx, discovered: list[dict]) -> dict:
        decoded = ctx.decoded([s for d in discovered for s in d["sample_ids"]])
        images = {sid: thumbnail_uri(x) for sid, x in decoded.items()}
        return {d["name"]: [images[s] for s in d["sample_ids"] if s in images] for d in discovered}

    def _disparity(self, ctx, results, attrs, opts, min_size) -> list[dict]:
        """Per condition and attribute: which group *loses more* under the condition. Compared per image
        (paired): among each group's images the model gets right clean, the share it still gets right
        (`kept_rate`); a group that is only worse on clean images keeps as many and is not flagged."""
        out = []
        clean_acc = {}
        base = with_intersections(ctx.clean_rows, opts.pairs())[0]
        clean_correct = ctx.clean_rows.set_index("sample_id")["correct"].astype(bool)
        for attr in attrs:
            clean_acc[attr] = base.groupby(aggregate.group_values(base[attr]))["correct"].mean().to_dict()
        # every check with per-image outcomes (Check.outcomes), in run order; only the columns the groups
        # need, and intersections one condition at a time: the corruption rows are conditions × images long
        columns = [*(a for pair in opts.pairs() for a in pair), *attrs]
        for name, condition, cond_rows in outcome_rows(results.values(), columns=columns):
            cond_rows = with_intersections(cond_rows, opts.pairs())[0]
            cond_rows["was_right"] = clean_correct.reindex(cond_rows["sample_id"]).to_numpy()
            for attr in attrs:
                groups = []
                for g, rows_g in group_accuracy(cond_rows, attr, min_size):
                    kept = rows_g.loc[rows_g["was_right"], "correct"]
                    groups.append({**g, "drop": round(clean_acc[attr].get(g["value"], float("nan"))
                                                      - float(rows_g["correct"].mean()), 6),
                                   "kept_rate": round(float(kept.mean()), 6) if len(kept) else None,
                                   "kept_rate_n": int(len(kept))})
                out.append({"check": name, "condition": condition, "attribute": attr, "groups": groups,
                            "measure": "kept_rate",
                            **gap(groups, seed=ctx.config.seed + len(out), measure="kept_rate")})
        holm_verdicts(out)
        return out

    def _slice_examples(self, ctx, clean, slices) -> list[dict]:
        """Up to four misclassified images from each of the three worst flagged slices."""
        flagged = sorted((s for s in slices if s["flagged"]), key=lambda s: s["accuracy"])[:3]
        out = []
        for s in flagged:
            ids = clean[clean["sample_id"].isin(s["sample_ids"]) & ~clean["correct"].astype(bool)]["sample_id"][:4]
            images = [to_data_uri(x) for b in ctx.batches(ids.to_numpy(), progress=False) for x in b.x]
            out.append({"property": s["property"], "quartile": s["quartile"], "accuracy": s["accuracy"],
                        "images": images})
        return out


PROPERTY_COLUMNS = ["brightness", "contrast", "sharpness", "dhash", "pixel_hash", "height", "width", "aspect"]


GAP_FAIL = 0.10  # a significant gap of 10 accuracy points or more is a `fail`; a smaller significant one a `warn`


def gap_findings(summary, clean: pd.DataFrame) -> list[Finding]:
    """A finding for each attribute whose gap is significant (after Holm over its family: the attributes, or
    the labels x attributes of a multi-label audit, multilabel/audit.py)."""
    out = []
    for attr, e in summary["attributes"].items():
        if e["significant"]:
            group = clean[clean[attr].astype(str) == str(e["worst"])] if attr in clean else clean.iloc[:0]
            out.append(Finding(
                "fail" if e["gap"] >= GAP_FAIL else "warn", "subgroups", "subgroup_gap", f"{attr} = {e['worst']}",
                f"Accuracy differs by {attr}: {e['worst']} is {100 * e['gap']:.1f} points below {e['best']}",
                f"95% interval {100 * e['gap_ci'][0]:.1f}-{100 * e['gap_ci'][1]:.1f} points; Fisher exact, "
                f"Holm-adjusted {fmt_p(e['p_adjusted'])}", effect=e["gap"], ci=e["gap_ci"],
                p_adjusted=e["p_adjusted"], evidence="#subgroups-gaps",
                sample_ids=aggregate.most_confident_errors(group, 6)["sample_id"].astype(int).tolist(),
                members=_errors(clean, group["sample_id"]) if attr in clean else None))  # an intersection: not here
    return out


def slice_key(description: str) -> str:
    """A discovered slice's id subject from what distinguishes it (bias/slices.py: describe), not from its
    discovery order: the metadata value it concentrates, else its class, else its first image property
    ("discovered:scanner=C", "discovered:class-5", "discovered:high-brightness")."""
    parts = [p.split(" (")[0] for p in description.split("; ")]
    meta = [p.rsplit(" ", 1)[0] for p in parts if " = " in p]
    klass = [p.rsplit(" ", 1)[0] for p in parts if p.startswith("class ")]
    props = [p for p in parts if p.startswith(("low ", "high "))]
    return "discovered:" + ((meta or klass or props or ["unexplained"])[0])


def _errors(clean: pd.DataFrame, ids) -> list[int]:
    """The misclassified images among `ids`: the images a group or slice finding is about (Finding.members)."""
    return clean.loc[clean["sample_id"].isin(ids) & ~clean["correct"].astype(bool), "sample_id"].astype(int).tolist()


def _findings(summary, clean: pd.DataFrame, discovered: list[dict], slices: list[dict]) -> list[Finding]:
    """`discovered` and `slices` with their members (`members`, `sample_ids`), which the summary leaves out."""
    out = []
    for d in discovered:
        if d["confirmed"]:
            out.append(Finding(
                "fail" if d["gap"] >= GAP_FAIL else "warn", "subgroups", "slice", d["name"],
                f"A discovered slice fails: {100 * d['accuracy']:.0f}% accuracy vs {100 * d['rest_accuracy']:.0f}% "
                "elsewhere, confirmed on held-out images", f"{d['description']}; {d['n']} held-out images (Fisher "
                f"exact, Holm-adjusted {fmt_p(d['p_adjusted'])})", effect=d["gap"], ci=d["gap_ci"],
                p_adjusted=d["p_adjusted"], evidence="#subgroups-discovered", sample_ids=d["sample_ids"],
                key=slice_key(d["description"]), members=_errors(clean, d["members"])))
    out.extend(gap_findings(summary, clean))
    for attr, r in summary["data_audit"]["representation"].items():
        for f in r["flagged"]:
            out.append(Finding("warn", "subgroups", "data", f"{attr} = {f['value']}",
                               f"{attr} = {f['value']} is {100 * f['share']:.0f}% class {f['class']} (overall "
                               f"{100 * f['class_share_overall']:.0f}%): a shortcut risk", evidence="#subgroups-data",
                               effect=f["share"] - f["class_share_overall"]))
    d = summary["data_audit"]["duplicates"]
    if d["n_conflicting"]:
        out.append(Finding("warn", "subgroups", "data", "duplicates", f"{d['n_conflicting']} duplicate group(s) "
                           "carry conflicting labels", evidence="#subgroups-data"))
    for s in slices:
        if s["flagged"]:
            out.append(Finding("warn", "subgroups", "slice", f"{s['property']} quartile {s['quartile']}",
                               f"Accuracy is lower on images in quartile {s['quartile']} of {s['property']}",
                               f"{100 * s['accuracy']:.1f}% vs {100 * s['rest_accuracy']:.1f}% elsewhere",
                               effect=s["rest_accuracy"] - s["accuracy"], p_adjusted=s.get("p_adjusted"),
                               evidence="#subgroups-data", members=_errors(clean, s["sample_ids"])))
    return out
