"""Shortcuts: is the model looking at the object, or at a ruler next to it? Causal tests first.

Inputs: the clean rows, artifact annotations (`--artifact NAME`: a 0/1 metadata column NAME with
`NAME_box` "x0 y0 x1 y1" or `NAME_mask` per image that has it), the model. Procedure per artifact:
  1. Remove: fill the region from its surroundings three ways (shortcuts/fills.py) and count flipped
     predictions, per fill, with Wilson intervals; the accuracy change on those images.
  2. Add: paste a seeded donor's artifact pixels at the same place onto artifact-free images and count
     flips towards the class the artifact goes with (the highest lift P(predicted c | artifact) / P(predicted c)).
  3. Statistical: within each true class, how often the associated class is predicted with and without
     the artifact (clean predictions).
  4. Attribution (illustration): saliency mass inside the region against its share of the image,
     Grad-CAM on eager modules, occlusion otherwise.
Verdict: `shortcut` when removal flips at least FLIP_SHORTCUT of the images under every fill (and the
lower interval bound is at least FLIP_FLOOR), or adding the artifact flips at least FLIP_SHORTCUT towards
its class with the same floor; `no evidence` when every upper interval bound is under FLIP_NONE;
`inconclusive` otherwise. Saliency never decides: raw mass can rank a planted model below its control.
Without annotations: a coarse occlusion scan and a border/corner saliency concentration on a seeded
subset give candidate shortcut regions; the Adebayo et al. 2018 check re-draws the top layer and asks
whether the maps changed.
Outputs: rows per artifact image and intervention (conditions `remove_<name>_<fill>`, `add_<name>`).
"""

from __future__ import annotations

from typing import Literal, TypedDict

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import binomtest, spearmanr

from ..data.images import image_size
from ..data.sampling import seeded_subset
from ..errors import AuditError
from ..findings import Finding, id_prefix
from ..rules import RuleKind, result, selected, without_evidence
from ..options import OptionError, option
from ..predict import predict
from ..datauri import to_data_uri
from ..seeds import sample_seed
from ..shortcuts.fills import FILLS, fill
from ..shortcuts.regions import box_mask, control_mask, file_mask, parse_box
from ..shortcuts.saliency import mass_inside, randomized_top_layer, saliency
from ..stats import ALPHA, p_value, proportion, wilson_ci
from .base import Check, CheckResult
from .registry import register

FLIP_SHORTCUT = 0.10  # share of flipped predictions that makes an artifact a shortcut
FLIP_FLOOR = 0.05  # ... provided the interval's lower bound clears this
FLIP_NONE = 0.20  # "no evidence" needs every upper bound below this
MIN_ANNOTATED = 10  # fewer usable annotated images than this: inconclusive (one image's interval is [0.21, 1])
# removing the artifact must beat removing the same region elsewhere (control) by this much, and by an exact
# one-sided McNemar test on the paired flips at ALPHA: a box over the object itself also flips predictions
CONTROL_MARGIN = 0.10
EMPTY_REGION = "artifact region empty at the model's input size (box outside the image?)"
SCAN_SUBSET = 128  # images for the annotation-free scans
SCAN_GRID = 4
SANITY_MAX_CORRELATION = 0.5
EXAMPLES = 6  # flipped images shown per intervention
SALIENCY_EXAMPLES = 4


@dataclass
class ShortcutOptions:
    artifacts: tuple[str, ...] = option((), flag="--artifact", many=True, repeat=True, allow_empty=True, metavar="NAME",
                                        help="a 0/1 metadata column marking an artifact (ruler, marker, watermark), "
                                             "located by NAME_box ('x0 y0 x1 y1') or NAME_mask (a mask image path); "
                                             "repeatable")

    def check_data(self, dataset, config=None) -> None:
        for name in self.artifacts:
            if name not in dataset.attributes:
                raise OptionError("artifacts", name, "not a metadata column (columns: "
                                  f"{', '.join(dataset.attributes) or 'none: no metadata.csv'})")
            if f"{name}_box" not in dataset.attributes and f"{name}_mask" not in dataset.attributes:
                raise OptionError("artifacts", name, f"metadata.csv needs a {name}_box ('x0 y0 x1 y1') or "
                                  f"{name}_mask (path) column to locate it")
            values = set(pd.to_numeric(dataset.table[name], errors="coerce").dropna().unique())
            if not values <= {0, 1}:
                raise OptionError("artifacts", name, "its metadata column must be 0/1 (artifact absent/present)")


def _judge_no_shortcut(rule, sc: dict) -> dict:
    """no_shortcut: no tested artifact (or the one named) judged a shortcut; inconclusive is no evidence."""
    arts = sc["artifacts"]
    names, bad = _shortcuts(rule, sc)
    detail = ", ".join(f"{a}: {arts[a]['verdict']}" for a in names)
    if not bad and any(arts[a]["verdict"] == "inconclusive" for a in names):
        return without_evidence(rule, "shortcuts.verdict", 0, 0, detail)
    return result(rule, "shortcuts.verdict", len(bad), 0, not bad, detail)


def _shortcuts(rule, sc: dict) -> tuple[list[str], list[str]]:
    """(the artifacts the rule judges, those judged a shortcut)."""
    arts, named = sc["artifacts"], rule.params.get("artifact")
    names = selected(rule, named, arts, "artifact", "test", f"add --artifact {named}")
    if not names:
        raise AuditError(f"rule {rule.name!r} needs at least one annotated artifact; add --artifact NAME.")
    return names, [a for a in names if arts[a]["verdict"] == "shortcut"]


def _shortcut_about(rule, sc: dict) -> list[str]:
    """A shortcut is about its shortcut finding (waivers); an inconclusive verdict is about none."""
    return [id_prefix("shortcuts", "shortcut", a) for a in _shortcuts(rule, sc)[1]]


def _plan_no_shortcut(rule, opts, attributes) -> None:
    named = rule.params.get("artifact")
    if not opts.artifacts:
        raise AuditError(f"rule {rule.name!r} needs at least one annotated artifact; add --artifact NAME "
                         "(a 0/1 metadata column with NAME_box or NAME_mask) or remove the rule.")
    if named is not None and named not in opts.artifacts:
        raise AuditError(f"rule {rule.name!r} names artifact {named!r}, which the audit will not test "
                         f"({', '.join(opts.artifacts)}); add --artifact {named} or fix the rule.")


# --- summary.json's `shortcuts` section (Check.section: the published schema is generated from it) ---
class ArtifactResult(TypedDict):
    """The causal tests on one annotated artifact (remove it, add it) and their verdict."""
    verdict: Literal["shortcut", "no evidence", "inconclusive"]


class ShortcutsSection(TypedDict):
    """Shortcuts: per annotated artifact (--artifact NAME), whether the model relies on it."""
    artifacts: dict[str, ArtifactResult]


@register
class ShortcutCheck(Check):
    name = "shortcuts"
    title = "Shortcuts"
    template = "sections/shortcuts.html.j2"
    section = ShortcutsSection
    finding_kinds = ("shortcut",)
    options_type = ShortcutOptions
    lower_is_better = ("shortcuts.flip_rate.",)
    rule_kinds = (RuleKind("no_shortcut", _judge_no_shortcut, plan=_plan_no_shortcut,
                           optional={"artifact": (str,), "on_inconclusive": (str,)}, evidence_key="on_inconclusive",
                           needs="--checks shortcuts --artifact NAME", about=_shortcut_about),)
    # --budget may give it a subset (planning.py): the occlusion scan of every image is the dearest part of a
    # default audit at 224 px (341 of 529 s for a ResNet-18 on 1,000 images, 2 cores)
    plannable = True

    @staticmethod
    def half_width(section: dict) -> float | None:
        """The widest flip-rate interval of its annotated artifacts (every fill), the precision --budget bought."""
        widths = [(f["flip_rate_ci"][1] - f["flip_rate_ci"][0]) / 2 for a in (section.get("artifacts") or {}).values()
                  for f in (a.get("by_fill") or {}).values() if f.get("flip_rate_ci")]
        return round(max(widths), 6) if widths else None

    @staticmethod
    def verdicts(section: dict) -> dict[str, str]:
        return {f"artifact {name}": str(a["verdict"]) for name, a in (section.get("artifacts") or {}).items()
                if a.get("verdict") is not None}

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:
        return {f"shortcuts.flip_rate.{name}": a["flip_rate"] for name, a in (section.get("artifacts") or {}).items()
                if a.get("flip_rate") is not None}

    @staticmethod
    def card_metrics(section) -> list[dict]:
        return []  # not in the card's model-index header; the card's own part shows its evidence

    def run(self, ctx, results) -> CheckResult:
        opts = self.opts
        clean = ctx.clean_rows.set_index("sample_id", drop=False)
        parts, artifacts, report = [], {}, {"artifacts": {}}
        for i, name in enumerate(opts.artifacts):
            rows, summary, examples = self._artifact(ctx, clean, name, seed=ctx.config.seed + i)
            parts.append(rows)
            artifacts[name] = summary
            report["artifacts"][name] = examples
        candidates, cand_examples = self._scan(ctx, clean)
        sanity = self._sanity(ctx, clean)
        rows = pd.concat(parts, ignore_index=True) if parts else ctx.base_rows([]).assign(check=self.name, condition="")
        summary = {"artifacts": artifacts, "candidates": candidates, "sanity": sanity,
                   "thresholds": {"flip_shortcut": FLIP_SHORTCUT, "flip_floor": FLIP_FLOOR, "flip_none": FLIP_NONE}}
        report["candidates"] = cand_examples
        findings = [_verdict_finding(n, a, rows) for n, a in artifacts.items() if a["verdict"] != "no evidence"]
        if sanity.get("passed") is False:
            findings.append(Finding("info", self.name, "note", "saliency", "Saliency maps barely change when the top "
                                    "layer is randomised (Adebayo et al. 2018): treat the maps as uninformative.",
                                    evidence="#shortcuts-sanity"))
        return CheckResult(self.name, rows, summary, report=report, findings=findings)

    # --- annotated artifacts -------------------------------------------------------------------------
    def _masks(self, ctx, name, sample_ids) -> torch.Tensor:
        table = ctx.dataset.table
        out = []
        for sid in sample_ids:
            path = ctx.dataset.path_of(sid)
            if f"{name}_mask" in table.columns and isinstance(table[f"{name}_mask"].iat[sid], str):
                out.append(file_mask(ctx.dataset.abspath(table[f"{name}_mask"].iat[sid]), ctx.model.input_size,
                                     ctx.config.max_pixels))
                continue
            box = parse_box(table[f"{name}_box"].iat[sid] if f"{name}_box" in table.columns else None,
                            f"{name}_box", path)
            if box is None:
                raise AuditError(f"{path!r} has {name} = 1 but no {name}_box or {name}_mask; annotate where it is.")
            stored = image_size(ctx.dataset.abspath(path)) or tuple(ctx.model.input_size)
            out.append(box_mask(box, stored, ctx.model.input_size))
        return torch.stack(out).to(ctx.device) if out else torch.zeros(0, 1, *ctx.model.input_size, dtype=torch.bool)

    def _usable(self, ctx, name, ids) -> tuple[np.ndarray, list[dict]]:
        """The annotated images whose region is not empty at the input size, and the others, listed."""
        empty = []
        for start in range(0, len(ids), ctx.config.batch_size):
            chunk = ids[start:start + ctx.config.batch_size]
            masks = self._masks(ctx, name, chunk)
            empty.extend(int(sid) for sid, m in zip(chunk, masks) if not bool(m.any()))
        return (np.setdiff1d(ids, np.asarray(empty, dtype=ids.dtype)),
                [{"path": ctx.dataset.path_of(sid), "reason": EMPTY_REGION} for sid in empty])

    def _artifact(self, ctx, clean, name, seed):
        present = pd.to_numeric(clean[name], errors="coerce").fillna(0).astype(int) == 1
        with_ids, excluded = self._usable(ctx, name, clean.index[present].to_numpy())
        without_ids = clean.index[~present].to_numpy()
        # the class the artifact goes with, by the model's clean predictions: the class whose prediction rate
        # rises most with the artifact (the labels may carry no association in an audit set, as in a
        # balanced test set, while the model still learned one)
        lift = (clean[present]["prediction"].value_counts(normalize=True)
                / clean["prediction"].value_counts(normalize=True)).dropna()
        assoc = int(lift.idxmax()) if len(lift) else 0
        shown_here = {"remove": 0, "saliency": 0}  # this process's examples so far; once enough, stop making them

        def remove(batch):
            ids = batch.sample_ids
            x, y = batch.x.to(ctx.device), batch.y.to(ctx.device)
            masks = self._masks(ctx, name, ids)
            before = clean.loc[ids, "prediction"].to_numpy().copy()
            parts, shown = [], []
            has, cmasks = _controls(ctx, name, ids, masks)
            for how in FILLS:
                xf = fill(x, masks, how)
                assert bool(((xf != x) <= masks.expand_as(x)).all()), "a fill touched pixels outside the region"
                cols = predict(ctx.model, xf, y)
                parts.append(self._rows(ctx, ids, f"remove_{name}_{how}", name, "remove", how, cols, before, assoc))
                if cmasks is not None:  # the same region, off the artifact: what removing any such region does
                    ccols = predict(ctx.model, fill(x[has], cmasks, how), y[has])
                    parts.append(self._rows(ctx, ids[has], f"control_{name}_{how}", name, "control", how, ccols,
                                            before[has], assoc))
                if how == FILLS[0] and shown_here["remove"] < EXAMPLES:
                    shown = [{"before": to_data_uri(x[k]), "after": to_data_uri(xf[k]),
                              "from": ctx.classes[int(before[k])], "to": ctx.classes[int(cols["prediction"][k])]}
                             for k in np.nonzero(cols["prediction"] != before)[0][:EXAMPLES]]
            maps, method = saliency(ctx.model, x, torch.as_tensor(before, device=ctx.device))
            maps_shown = [{"image": to_data_uri(x[k]), "map": to_data_uri(_normalise(maps[k])[None]),
                           "box": to_data_uri(masks[k].float())}
                          for k in range(min(len(ids), SALIENCY_EXAMPLES - shown_here["saliency"]))]
            shown_here["remove"] += len(shown)
            shown_here["saliency"] += len(maps_shown)
            return (parts, shown, maps_shown, mass_inside(maps, masks).cpu(),
                    masks.float().flatten(1).mean(dim=1).cpu(), method)

        done = ctx.map_batches(remove, with_ids, desc=f"shortcuts: {name}")
        parts = [p for d in done for p in d[0]]
        examples = {"remove": [e for d in done for e in d[1]][:EXAMPLES], "add": [],
                    "saliency": [e for d in done for e in d[2]][:SALIENCY_EXAMPLES]}
        masses, shares = [d[3] for d in done], [d[4] for d in done]
        method = done[-1][5] if done else None
        add_rows = self._add(ctx, clean, name, with_ids, without_ids, assoc, seed, examples)
        parts.append(add_rows)
        rows = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else \
            ctx.base_rows([]).assign(check=self.name, condition="")
        summary = summarize_artifact(rows, clean, name, assoc, ctx.classes, len(with_ids), len(without_ids))
        summary["n_excluded"], summary["excluded"] = len(excluded), excluded
        mass = torch.cat(masses) if masses else torch.zeros(0)
        share = torch.cat(shares) if shares else torch.zeros(0)
        ok = ~torch.isnan(mass)
        summary["saliency_mass"] = round(float(mass[ok].mean()), 6) if bool(ok.any()) else None
        summary["area_share"] = round(float(share.mean()), 6) if len(share) else None
        summary["saliency_mass_ratio"] = (round(summary["saliency_mass"] / summary["area_share"], 6)
                                          if summary["saliency_mass"] is not None and summary["area_share"] else None)
        summary["saliency_method"] = method
        return rows, summary, examples

    def _add(self, ctx, clean, name, with_ids, without_ids, assoc, seed, examples) -> pd.DataFrame:
        if not len(with_ids) or not len(without_ids):
            return pd.DataFrame()
        rng = np.random.default_rng(seed)
        donors = rng.choice(with_ids, size=len(without_ids))
        donor_of = dict(zip(without_ids.tolist(), donors.tolist()))

        shown_here = [0]

        def paste(batch):
            donors = [donor_of[int(sid)] for sid in batch.sample_ids]
            donor_x = {int(sid): (xd, m) for b in ctx.batches(np.unique(donors), progress=False)
                       for sid, xd, m in zip(b.sample_ids, b.x.to(ctx.device), self._masks(ctx, name, b.sample_ids))}
            x, y = batch.x.to(ctx.device), batch.y.to(ctx.device)
            dx = torch.stack([donor_x[d][0] for d in donors])
            m = torch.stack([donor_x[d][1] for d in donors])
            xa = torch.where(m.expand_as(x), dx, x)
            before = clean.loc[batch.sample_ids, "prediction"].to_numpy().copy()
            cols = predict(ctx.model, xa, y)
            shown = [{"before": to_data_uri(x[k]), "after": to_data_uri(xa[k]), "from": ctx.classes[int(before[k])],
                      "to": ctx.classes[assoc]}
                     for k in np.nonzero((cols["prediction"] == assoc) & (before != assoc))[0][:EXAMPLES - shown_here[0]]]
            shown_here[0] += len(shown)
            rows = [self._rows(ctx, batch.sample_ids, f"add_{name}", name, "add", "paste", cols, before, assoc)]
            # control: the donor's pixels from the same-size region off its artifact, pasted there
            has, cm = _controls(ctx, name, donors, m)
            if cm is not None:
                xc = torch.where(cm.expand_as(x[has]), dx[has], x[has])
                rows.append(self._rows(ctx, batch.sample_ids[has], f"add_control_{name}", name, "add_control",
                                       "paste", predict(ctx.model, xc, y[has]), before[has], assoc))
            return pd.concat(rows, ignore_index=True), shown

        done = ctx.map_batches(paste, without_ids, desc=f"shortcuts: {name} added")
        examples["add"] = [e for _, shown in done for e in shown][:EXAMPLES]
        return pd.concat([rows for rows, _ in done], ignore_index=True)

    def _rows(self, ctx, ids, condition, name, intervention, how, cols, before, assoc) -> pd.DataFrame:
        rows = ctx.base_rows(ids).assign(check=self.name, condition=condition, artifact=name,
                                         intervention=intervention, fill=how)
        for k, v in cols.items():
            rows[k] = v
        rows["prediction_name"] = [ctx.classes[p] for p in cols["prediction"]]
        rows["clean_prediction"] = before
        rows["flipped"] = cols["prediction"] != before
        rows["toward_associated"] = (cols["prediction"] == assoc) & (before != assoc)
        return rows

    # --- without annotations ----------------------------------------------------------------------------
    def _subset(self, ctx, clean) -> np.ndarray:
        return seeded_subset(clean.index.to_numpy(), SCAN_SUBSET, ctx.config.seed)

    def _scan(self, ctx, clean):
        """Occlusion of each cell of a 4 x 4 grid (flip rate) and saliency concentration in the border."""
        ids = self._subset(ctx, clean)

        def occlude(batch):
            x = batch.x.to(ctx.device)
            before = torch.as_tensor(clean.loc[batch.sample_ids, "prediction"].to_numpy().copy(), device=ctx.device)
            h, w = x.shape[2:]
            ys = np.linspace(0, h, SCAN_GRID + 1).round().astype(int)
            xs = np.linspace(0, w, SCAN_GRID + 1).round().astype(int)
            flips, shown = np.zeros((SCAN_GRID, SCAN_GRID)), {}
            for i in range(SCAN_GRID):
                for j in range(SCAN_GRID):
                    mask = torch.zeros(len(x), 1, h, w, dtype=torch.bool, device=ctx.device)
                    mask[:, :, ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = True
                    with torch.no_grad():
                        pred = ctx.model(fill(x, mask, "ring_mean")).argmax(1)
                    changed = (pred != before).cpu().numpy()
                    flips[i, j] = changed.sum()
                    if changed.any():
                        shown[(i, j)] = to_data_uri(x[int(np.nonzero(changed)[0][0])])
            maps, _ = saliency(ctx.model, x, before)
            band = torch.zeros(1, 1, h, w, dtype=torch.bool, device=ctx.device)
            bh, bw = max(1, h // 8), max(1, w // 8)
            band[..., :bh, :] = band[..., -bh:, :] = True
            band[..., :, :bw] = band[..., :, -bw:] = True
            return flips, shown, mass_inside(maps, band.expand(len(x), -1, -1, -1)).cpu(), len(x)

        done = ctx.map_batches(occlude, ids, desc="shortcuts: scan")
        flips = sum((d[0] for d in done), np.zeros((SCAN_GRID, SCAN_GRID)))
        flipped_examples = {}
        for d in done:  # the first flipped image per cell, in sample order
            for cell, uri in d[1].items():
                flipped_examples.setdefault(cell, uri)
        border_mass, n = [d[2] for d in done], sum(d[3] for d in done)
        rates = flips / max(1, n)
        median = float(np.median(rates))
        candidates = []
        for i in range(SCAN_GRID):
            for j in range(SCAN_GRID):
                edge = i in (0, SCAN_GRID - 1) or j in (0, SCAN_GRID - 1)
                corner = i in (0, SCAN_GRID - 1) and j in (0, SCAN_GRID - 1)
                candidates.append({"row": i, "col": j, "region": "corner" if corner else ("border" if edge else "centre"),
                                   "flip_rate": round(float(rates[i, j]), 6),
                                   "flip_rate_ci": wilson_ci(int(flips[i, j]), n),
                                   "candidate": bool(edge and rates[i, j] >= max(0.1, 2 * median))})
        bm = torch.cat(border_mass) if border_mass else torch.zeros(0)
        ok = ~torch.isnan(bm)
        border_share = 1 - (1 - 2 / 8) ** 2
        concentration = {"border_saliency_mass": round(float(bm[ok].mean()), 6) if bool(ok.any()) else None,
                         "border_area_share": round(border_share, 6), "n": n}
        examples = [{"row": c["row"], "col": c["col"], "image": flipped_examples.get((c["row"], c["col"]))}
                    for c in candidates if c["candidate"]]
        return {"grid": candidates, "saliency_border": concentration}, examples

    def _sanity(self, ctx, clean) -> dict:
        twin = randomized_top_layer(ctx.model, ctx.config.seed)
        if twin is None:
            return {"check": "randomized_top_layer", "passed": None,
                    "detail": "not run: the model exposes no Linear layer to randomise (TorchScript or exported)"}
        ids = self._subset(ctx, clean)[:32]
        corr, flat = [], 0
        for batch in ctx.batches(ids, progress=False):
            x = batch.x.to(ctx.device)
            target = torch.as_tensor(clean.loc[batch.sample_ids, "prediction"].to_numpy().copy(), device=ctx.device)
            a, _ = saliency(ctx.model, x, target)
            b, _ = saliency(twin, x, target)
            for u, v in zip(a.flatten(1).cpu().numpy(), b.flatten(1).cpu().numpy()):
                # a constant map has no ranking (float32 std of equal values can round above 0: compare the range)
                if np.ptp(u) > 0 and np.ptp(v) > 0:
                    corr.append(float(spearmanr(u, v).statistic))
                else:
                    flat += 1
        mean = float(np.mean(corr)) if corr else None
        passed = None if mean is None else mean < SANITY_MAX_CORRELATION
        detail = ("maps change when the top layer is randomised" if passed else
                  "maps barely change when the top layer is randomised: they do not explain this model"
                  ) if passed is not None else "no informative maps"
        if flat:
            detail += f" ({flat} of {len(corr) + flat} sample pairs left out: a constant map has no ranking)"
        return {"check": "randomized_top_layer", "passed": passed, "rank_correlation": None if mean is None else round(mean, 6),
                "detail": detail}


def summarize_artifact(rows, clean, name, assoc, classes, n_with, n_without) -> dict:
    if rows.empty:  # nothing was tested (no usable annotated image): empty selections below
        rows = pd.DataFrame({"sample_id": pd.Series(dtype=int), "condition": pd.Series(dtype=str),
                             "correct": pd.Series(dtype=bool), "flipped": pd.Series(dtype=bool),
                             "clean_prediction": pd.Series(dtype=int), "toward_associated": pd.Series(dtype=bool)})
    by_fill = {}
    for how in FILLS:
        sel = rows[rows["condition"] == f"remove_{name}_{how}"]
        k, n = int(sel["flipped"].sum()), len(sel)
        by_fill[how] = {"flip_rate": proportion(k, n), "flip_rate_ci": wilson_ci(k, n), "n": n,
                        "accuracy_change": round(float(sel["correct"].mean()) - float(
                            clean.loc[sel["sample_id"], "correct"].mean()), 6) if n else None,
                        **versus_control(sel, rows[rows["condition"] == f"control_{name}_{how}"])}
    add = rows[rows["condition"] == f"add_{name}"]
    eligible = add[add["clean_prediction"] != assoc]
    k_add, n_add = int(eligible["toward_associated"].sum()), len(eligible)
    pasted_off = rows[rows["condition"] == f"add_control_{name}"]
    add_control = versus_control(eligible.assign(flipped=eligible["toward_associated"]),
                                 pasted_off.assign(flipped=pasted_off["toward_associated"]))
    worst = min(by_fill.values(), key=lambda f: -1 if f["flip_rate"] is None else f["flip_rate"])
    present = pd.to_numeric(clean[name], errors="coerce").fillna(0).astype(int) == 1
    conditional = []
    for c, cname in enumerate(classes):
        w, wo = clean[present & (clean["label"] == c)], clean[~present & (clean["label"] == c)]
        if len(w) and len(wo):
            conditional.append({"class": cname, "n_with": len(w), "n_without": len(wo),
                                "rate_with": proportion(int((w["prediction"] == assoc).sum()), len(w)),
                                "rate_without": proportion(int((wo["prediction"] == assoc).sum()), len(wo))})
    summary = {"associated_class": classes[assoc], "n_with": int(n_with), "n_without": int(n_without),
               "flip_rate": worst["flip_rate"], "flip_rate_ci": worst["flip_rate_ci"],
               "accuracy_change": worst["accuracy_change"], "by_fill": by_fill,
               "add_flip_rate": proportion(k_add, n_add), "add_flip_rate_ci": wilson_ci(k_add, n_add), "n_add": n_add,
               "add_versus_control": add_control,
               "conditional_rates": conditional}
    summary["min_annotated"] = MIN_ANNOTATED
    summary["verdict"] = verdict(by_fill, summary["add_flip_rate"], summary["add_flip_rate_ci"], int(n_with),
                                 add_control)
    return summary


def _verdict_finding(name: str, a: dict, rows: pd.DataFrame) -> Finding:
    """A shortcut verdict is a `fail` (causal evidence: removing the artifact flips predictions beyond the
    control); an inconclusive one a `warn` (too few annotated images, or the tests disagree)."""
    worst = min(a["by_fill"], key=lambda k: -(a["by_fill"][k]["flip_rate"] or 0)) if a["by_fill"] else None
    ids, members = [], None
    if worst and "flipped" in rows:  # its images: those whose prediction removing it (worst fill) flipped
        flipped = rows[(rows["condition"] == f"remove_{name}_{worst}") & rows["flipped"].fillna(False).astype(bool)]
        members = flipped.sort_values("sample_id")["sample_id"].astype(int).tolist()
        ids = members[:6]
    if a["verdict"] == "shortcut":
        return Finding("fail", "shortcuts", "shortcut", name, f"Shortcut: the model relies on {name!r}",
                       f"removing it flips {100 * a['flip_rate']:.0f}% of predictions on images that have it (every "
                       f"fill); pasting it moves {100 * (a['add_flip_rate'] or 0):.0f}% toward "
                       f"{a['associated_class']!r}", effect=a["flip_rate"], ci=a["flip_rate_ci"],
                       evidence=f"#shortcuts-{name}", sample_ids=ids, members=members)
    return Finding("warn", "shortcuts", "shortcut", name, f"Shortcut test for {name!r} is inconclusive",
                   f"worst flip rate {100 * (a['flip_rate'] or 0):.0f}% on {a['n_with']} annotated image(s)",
                   effect=a["flip_rate"], ci=a["flip_rate_ci"], evidence=f"#shortcuts-{name}", members=members)


def _controls(ctx, name, ids, masks) -> tuple[np.ndarray, torch.Tensor | None]:
    """Each mask's control region (seeded by the image's sample id): which images have one, and those
    regions stacked on the device (None when none has)."""
    regions = [control_mask(m, sample_seed(ctx.config.seed, sid, f"control_{name}"))
               for sid, m in zip(ids, masks.cpu())]
    has = np.array([r is not None for r in regions], dtype=bool)
    return has, (torch.stack([r for r in regions if r is not None]).to(ctx.device) if has.any() else None)


def versus_control(removed: pd.DataFrame, control: pd.DataFrame) -> dict:
    """Flip rate when the same region is removed off the artifact, and the exact one-sided McNemar p-value
    that removing the artifact flips more, on the images that have both (paired by sample)."""
    pair = removed[["sample_id", "flipped"]].merge(control[["sample_id", "flipped"]], on="sample_id",
                                                   suffixes=("", "_control"))
    n, k, k_control = len(pair), int(pair["flipped"].sum()), int(pair["flipped_control"].sum())
    b = int((pair["flipped"] & ~pair["flipped_control"]).sum())  # discordant pairs, each way
    c = int((~pair["flipped"] & pair["flipped_control"]).sum())
    p = binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
    return {"control_flip_rate": proportion(k_control, n), "control_flip_rate_ci": wilson_ci(k_control, n),
            "n_control": n, "excess_over_control": round((k - k_control) / n, 6) if n else None,
            "p_vs_control": p_value(p)}


def _beats_control(c: dict) -> bool:
    return bool(c["n_control"]) and c["excess_over_control"] >= CONTROL_MARGIN and c["p_vs_control"] < ALPHA


def verdict(by_fill: dict, add_rate, add_ci, n_usable: int, add_control: dict | None = None) -> str:
    """`inconclusive` below MIN_ANNOTATED usable images; `shortcut` when removal flips enough under every
    fill *and* clearly more than removing the same region elsewhere, or pasting flips enough towards the
    associated class; `no evidence` when every upper bound is low; else `inconclusive`."""
    fills = [f for f in by_fill.values() if f["n"]]
    if n_usable < MIN_ANNOTATED or (not fills and add_rate is None):
        return "inconclusive"
    removal = bool(fills) and all(
        f["flip_rate"] >= FLIP_SHORTCUT and f["flip_rate_ci"][0] >= FLIP_FLOOR and _beats_control(f) for f in fills)
    adding = (add_rate is not None and add_rate >= FLIP_SHORTCUT and add_ci[0] >= FLIP_FLOOR
              and add_control is not None and _beats_control(add_control))
    if removal or adding:
        return "shortcut"
    uppers = [f["flip_rate_ci"][1] for f in fills] + ([add_ci[1]] if add_ci else [])
    return "no evidence" if uppers and max(uppers) < FLIP_NONE else "inconclusive"


def _normalise(m: torch.Tensor) -> torch.Tensor:
    return (m / m.max()).clamp(0, 1) if float(m.max()) > 0 else m

