"""Shift consistency: does moving the image a few pixels change the answer?

Inputs: the wrapped model and every readable image with its clean prediction. Procedure, per batch:
- consistency (Zhang 2019, "Making convolutional networks shift-invariant again"): each image under two
  random shifts, each offset drawn per sample from its key, uniformly among the whole-pixel offsets with
  |dx|, |dy| <= the largest of --shift-pixels; consistent when the two predictions agree;
- worst-of-k (Azulay & Weiss 2019, "Why do deep convolutional networks generalize so poorly to small
  image transformations?"): each image shifted by each of --shift-pixels (default 1, 2, 3) in each of
  the 8 compass directions (k = 24), changed when any of the k predictions differs from the clean one.
Shifts are by whole pixels with the border filled like the image's own (corruptions/geometry.py), so the
content moves exactly. Outputs: one row per image (condition `shift`) with `consistent`, `n_changed` (of
k), `changed`, `changed_by` (the first shift, "(dx, dy)", that changed it) and `correct`: right on the clean
image and under all k shifts (worst-of-k accuracy); the prediction shown is that first shift's, else the
clean one. Summary `shift`: the three shares
with Wilson intervals, per class and per metadata group, all derived from the rows.
"""

from __future__ import annotations

from typing import Any, TypedDict

from dataclasses import dataclass

import numpy as np
import torch

from .. import aggregate
from ..schema import CI, Count, Doc, Share
from ..corruptions import sample_keys
from ..corruptions.geometry import border_fill, shift
from ..corruptions.rng import uniform
from ..findings import Finding
from ..options import option
from ..predict import predict
from ..stats import proportion, wilson_ci
from .base import Check, CheckResult
from .registry import register

DIRECTIONS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))  # (dx, dy), y downwards
FAIL_CHANGED = 0.25  # share of images whose prediction a small shift changes, for a `fail`
WARN_CHANGED = 0.05
EXAMPLES = 6


@dataclass
class ShiftOptions:
    pixels: tuple[int, ...] = option((1, 2, 3), flag="--shift-pixels", many=True, parse=int, positive=True, sort=True,
                                     expects="shifts are whole numbers of pixels",
                                     help="shift sizes in pixels for worst-of-k, each in 8 directions; the largest "
                                          "bounds the two random shifts of the consistency measure (default: 1,2,3)")

    def offsets(self) -> list[tuple[int, int]]:
        """The k = 8 x len(pixels) shifts of worst-of-k, as (dx, dy)."""
        return [(p * dx, p * dy) for p in self.pixels for dx, dy in DIRECTIONS]


def _share(flags: np.ndarray) -> tuple[float | None, list[float] | None]:
    k, n = int(np.sum(flags)), len(flags)
    return proportion(k, n), wilson_ci(k, n)


def _by(rows, column: str, keys: list[str]) -> list[dict]:
    """A boolean column's share with a Wilson interval per combination of `keys`."""
    return [{**{k: r[k] for k in keys}, column: r["accuracy"], f"{column}_ci": r["accuracy_ci"], "n": r["n"]}
            for r in aggregate.accuracy_by(rows[[*keys, column]].assign(correct=rows[column]), keys)]


def summarize_shift(rows, opts: ShiftOptions, attributes) -> dict:
    out = {"pixels": list(opts.pixels), "k": len(opts.offsets()), "max_shift": max(opts.pixels),
           "n": int(len(rows))}
    for column, name in (("consistent", "consistency"), ("changed", "changed"), ("correct", "worst_accuracy")):
        out[name], out[f"{name}_ci"] = _share(rows[column].to_numpy(dtype=bool))
    per_class = {c: _by(rows, c, ["label_name"]) for c in ("consistent", "changed")}
    out["per_class"] = [{"class": a["label_name"], "n": a["n"], "consistency": a["consistent"],
                         "consistency_ci": a["consistent_ci"], "changed": b["changed"], "changed_ci": b["changed_ci"]}
                        for a, b in zip(per_class["consistent"], per_class["changed"])]
    out["per_group"] = []
    for attr in aggregate.group_columns(rows, attributes):
        narrow = rows[["consistent", "changed"]].assign(value=rows[attr].astype(str))
        for a, b in zip(_by(narrow, "consistent", ["value"]), _by(narrow, "changed", ["value"])):
            out["per_group"].append({"attribute": attr, "value": a["value"], "n": a["n"],
                                     "consistency": a["consistent"], "consistency_ci": a["consistent_ci"],
                                     "changed": b["changed"], "changed_ci": b["changed_ci"]})
    return out


# --- summary.json's `shift` section (Check.section: the published schema is generated from it) ---
@Doc("shift consistency (Zhang 2019) and worst-of-k changes (Azulay & Weiss 2019) under whole-pixel shifts")
class ShiftSection(TypedDict):
    """Shift consistency: the share of images whose prediction two random shifts agree on, the share that
    any of k shifts changes, and accuracy under all k, with intervals, per class and per group."""
    pixels: list[int]
    k: Count
    max_shift: Count
    n: Count
    consistency: Share
    consistency_ci: CI
    changed: Share
    changed_ci: CI
    worst_accuracy: Share
    worst_accuracy_ci: CI
    per_class: Any
    per_group: Any


@register
class ShiftCheck(Check):
    name = "shift"
    plannable = True  # --budget may give it a subset of the images (planning.py)
    title = "Shift consistency"
    template = "sections/shift.html.j2"
    section = ShiftSection
    outcomes = ("correct",)  # right on the image and under all k shifts (worst-of-k)
    finding_kinds = ("shift_sensitivity",)
    options_type = ShiftOptions
    lower_is_better = ("shift.changed",)

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:
        return {f"shift.{key}": section[key] for key in ("consistency", "changed", "worst_accuracy")
                if section.get(key) is not None}

    @staticmethod
    def card_metrics(section) -> list[dict]:
        if section.get("consistency") is None:
            return []
        return [{"type": "shift_consistency", "name": f"Shift consistency (two random shifts of at most "
                 f"{section['max_shift']} px)", "value": section["consistency"]}]

    def summarize(self, rows, results, classes, attributes) -> dict:
        return summarize_shift(rows, self.opts, attributes)

    def run(self, ctx, results) -> CheckResult:
        opts, seed = self.opts, ctx.config.seed
        offsets, m = opts.offsets(), max(opts.pixels)
        clean = ctx.clean_rows.set_index("sample_id")

        def evaluate(batch) -> dict[str, np.ndarray]:
            ids = np.asarray(batch.sample_ids)
            x, y = batch.x.to(ctx.device), batch.y.to(ctx.device)
            fill = border_fill(x)
            clean_pred = clean.loc[ids, "prediction"].to_numpy()
            # two random offsets per image in [-m, m]^2, from its key: the same in any batch or process
            draws = uniform(sample_keys(seed, ids, "shift", x.device), (4,), stream=0)
            d = torch.clamp((draws * (2 * m + 1)).long() - m, -m, m).cpu()
            a = predict(ctx.model, shift(x, d[:, 0], d[:, 1], fill), y)
            b = predict(ctx.model, shift(x, d[:, 2], d[:, 3], fill), y)
            n_changed = np.zeros(len(ids), dtype=np.int64)
            all_correct = clean.loc[ids, "correct"].to_numpy(dtype=bool).copy()
            shown = {"prediction": clean_pred.copy(), "confidence": clean.loc[ids, "confidence"].to_numpy().copy()}
            first = np.full(len(ids), -1)
            n = len(ids)
            for j, (dx, dy) in enumerate(offsets):
                cols = predict(ctx.model, shift(x, torch.full((n,), dx), torch.full((n,), dy), fill), y)
                moved = cols["prediction"] != clean_pred
                n_changed += moved
                all_correct &= cols["correct"].astype(bool)
                new = moved & (first < 0)
                first[new] = j
                shown["prediction"][new], shown["confidence"][new] = cols["prediction"][new], cols["confidence"][new]
            return {"sample_id": ids, "consistent": a["prediction"] == b["prediction"], "n_changed": n_changed,
                    "changed": n_changed > 0, "correct": all_correct, "first_change": first, **shown}

        res = aggregate.stack_columns(ctx.map_batches(evaluate, desc="shift"))
        order = np.argsort(res["sample_id"], kind="stable") if res else np.zeros(0, dtype=np.int64)
        rows = ctx.base_rows(res.get("sample_id", np.zeros(0, dtype=np.int64))[order])
        rows["check"], rows["condition"] = self.name, "shift"
        for col in ("prediction", "confidence", "consistent", "n_changed", "changed", "correct"):
            rows[col] = res[col][order] if res else np.zeros(0)
        rows["prediction_name"] = np.array(ctx.classes, dtype=object)[rows["prediction"].to_numpy(dtype=np.int64)]
        rows["changed_by"] = [str(offsets[j]) if j >= 0 else "" for j in (res["first_change"][order] if res else [])]
        for col in ("consistent", "changed", "correct"):
            rows[col] = rows[col].astype(bool)
        summary = self.summarize(rows, results, ctx.classes, ctx.dataset.attributes)
        # the images a shift changed, most changes first: the gallery's and the finding's examples
        ranked = rows[rows["changed"]].sort_values(["n_changed", "sample_id"], ascending=[False, True])
        return CheckResult(self.name, rows, summary, report={"examples": self._examples(ctx, ranked)},
                           findings=_findings(summary, ranked))

    def _examples(self, ctx, ranked) -> list[dict]:
        """The first of the `ranked` changed images: clean and shifted side by side."""
        from ..datauri import thumbnail_uri
        top = ranked.head(ctx.config.gallery_size)
        images = ctx.decoded(top["sample_id"].to_numpy())
        clean = ctx.clean_rows.set_index("sample_id")
        out = []
        for r in top.itertuples():
            x = images.get(int(r.sample_id))
            if x is None:
                continue
            dx, dy = (int(v) for v in r.changed_by.strip("()").split(","))
            moved = shift(x[None], torch.tensor([dx]), torch.tensor([dy]))[0]
            out.append({"path": r.path, "label": r.label_name, "clean": clean.loc[r.sample_id, "prediction_name"],
                        "shifted": r.prediction_name, "shift": f"{dx:+d}, {dy:+d} px", "n_changed": int(r.n_changed),
                        "original": thumbnail_uri(x, side=96), "moved": thumbnail_uri(moved, side=96)})
        return out


def _findings(summary: dict, ranked) -> list[Finding]:
    """A finding when small shifts change a share of predictions the data supports: fail at 25% or more
    (with the interval's lower end at 5% or more), warn at 5% or more (with the lower end above 0).
    `ranked`: the changed images, most changes first."""
    share, ci = summary["changed"], summary["changed_ci"]
    if share is None or ci is None or share < WARN_CHANGED or ci[0] <= 0:
        return []
    return [Finding(
        "fail" if share >= FAIL_CHANGED and ci[0] >= WARN_CHANGED else "warn", "shift", "shift_sensitivity", "shift",
        f"Shifting by {summary['max_shift']} pixel(s) or less changes {100 * share:.0f}% of predictions",
        f"{len(ranked)} of {summary['n']} images change under at least one of {summary['k']} shifts "
        f"of {', '.join(map(str, summary['pixels']))} px; two random shifts agree on "
        f"{100 * summary['consistency']:.0f}% (Zhang 2019 consistency); worst-of-{summary['k']} accuracy "
        f"{100 * summary['worst_accuracy']:.0f}%", effect=share, ci=ci, evidence="#shift",
        sample_ids=ranked["sample_id"].head(EXAMPLES).astype(int).tolist(), members=ranked["sample_id"])]
