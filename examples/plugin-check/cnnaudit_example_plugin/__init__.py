"""Colour-cast sensitivity: does a warm or cool tint change the prediction?

Inputs: the wrapped model and every readable image. Procedure: each image under each cast (per-channel
gains; on one-channel images the first channel's gain, a brighter or darker image), one prediction per
image and cast. Outputs: one row per
image and cast, whose `correct` column is a declared per-image outcome (so the casts reach cnnaudit's sample
explorer, robustness disparity, release comparison and model card); per cast, accuracy with a Wilson
interval and the share of clean-correct images whose prediction flipped, derived from the rows. Its summary
section's type (`ColourCastSection`) is what `cnnaudit.testing` checks the section against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import pandas as pd
import torch

from cnnaudit import aggregate
from cnnaudit.checks import Check, CheckResult
from cnnaudit.rules import NUMBER, RuleKind, result
from cnnaudit.options import option
from cnnaudit.predict import predict

CASTS = {"warm": (1.15, 1.0, 0.85), "cool": (0.85, 1.0, 1.15)}


@dataclass
class ColourCastOptions:  # its flag, --colour-casts, is generated from this declaration
    casts: tuple[str, ...] = option(tuple(CASTS), flag="--colour-casts", many=True, choices=tuple(CASTS),
                                    help="colour casts to apply, comma-separated (default: warm,cool)")


class CastResult(TypedDict):
    cast: str
    n: int
    accuracy: float | None
    accuracy_ci: list[float] | None
    flip_rate: float


class ColourCastSection(TypedDict):
    """summary.json's `example_plugin` section."""
    casts: list[CastResult]


def max_flip_rate(rule, section: ColourCastSection) -> dict:  # the gate rule kind `max_colour_cast_flip`
    worst, limit = max(section["casts"], key=lambda c: c["flip_rate"]), rule.params["threshold"]
    return result(rule, f"example_plugin.flip_rate.{worst['cast']}", worst["flip_rate"], limit,
                  worst["flip_rate"] <= limit, f"{worst['cast']} cast flips {worst['flip_rate']:.4f} (maximum {limit})")


class ColourCastCheck(Check):
    name = "example_plugin"
    title = "Colour cast (example plugin)"
    template = "example_plugin.html.j2"
    template_dir = str(Path(__file__).parent / "templates")
    requires = ("clean",)
    options_type = ColourCastOptions
    section = ColourCastSection
    outcomes = ("correct",)  # right on the image under the cast: one row per image and cast
    lower_is_better = ("example_plugin.flip_rate.",)
    rule_kinds = (RuleKind("max_colour_cast_flip", max_flip_rate, required={"threshold": NUMBER}),)

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:  # gateable: max_regression rules and `cnnaudit diff`
        return {f"example_plugin.flip_rate.{c['cast']}": c["flip_rate"] for c in section.get("casts", [])}

    def summarize(self, rows, results, classes, attributes) -> dict:  # from the rows alone (the contract test checks)
        was_correct = results["clean"].rows.set_index("sample_id")["correct"]
        return {"casts": [{"cast": cast, **aggregate.accuracy(g),
                           "flip_rate": float(g.loc[was_correct.loc[g["sample_id"]].to_numpy(), "flipped"].mean())}
                          for cast, g in rows.groupby("condition", sort=False)]}

    def run(self, ctx, results) -> CheckResult:
        clean = results["clean"].rows.set_index("sample_id")

        def evaluate(batch):
            out = []
            for cast in self.opts.casts:
                g = torch.tensor(CASTS[cast])
                g = g[:1] if batch.x.shape[1] == 1 else g
                x = (batch.x * g.view(1, -1, 1, 1)).clamp(0, 1)
                out.append(pd.DataFrame({"sample_id": batch.sample_ids, "condition": cast,
                                         **predict(ctx.model, x.to(ctx.device), batch.y.to(ctx.device))}))
            return pd.concat(out, ignore_index=True)

        res = pd.concat(ctx.map_batches(evaluate, desc="colour cast"), ignore_index=True)
        rows = ctx.base_rows(res["sample_id"]).assign(check=self.name)
        for col in ("condition", "prediction", "correct", "confidence", "loss"):
            rows[col] = res[col].to_numpy()
        rows["flipped"] = rows["prediction"].to_numpy() != clean.loc[rows["sample_id"], "prediction"].to_numpy()
        summary = self.summarize(rows, results, ctx.classes, ctx.dataset.attributes)
        worst = max(summary["casts"], key=lambda c: c["flip_rate"])
        findings = ([f"A {worst['cast']} colour cast flips {100 * worst['flip_rate']:.0f}% of the correct predictions."]
                    if worst["flip_rate"] > 0.1 else [])
        return CheckResult(self.name, rows, summary, findings=findings)
