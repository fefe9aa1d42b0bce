"""Colour-cast sensitivity: does a warm or cool tint change the prediction?

Inputs: the wrapped model and every readable image. Procedure: each image under each cast (per-channel
gains; on one-channel images the first channel's gain, a brighter or darker image), one prediction per
image and cast. Outputs: one row per
image and cast; per cast, accuracy with a Wilson interval and the share of clean-correct images whose
prediction flipped, derived from the rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from cnnaudit import aggregate
from cnnaudit.checks import Check, CheckResult
from cnnaudit.predict import predict

CASTS = {"warm": (1.15, 1.0, 0.85), "cool": (0.85, 1.0, 1.15)}


class ColourCastCheck(Check):
    name = "example_plugin"
    title = "Colour cast (example plugin)"
    template = "example_plugin.html.j2"
    template_dir = str(Path(__file__).parent / "templates")
    requires = ("clean",)
    lower_is_better = ("example_plugin.flip_rate.",)

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:  # gateable: max_regression rules and `cnnaudit diff`
        return {f"example_plugin.flip_rate.{c['cast']}": c["flip_rate"] for c in section.get("casts", [])}

    def run(self, ctx, inputs) -> CheckResult:
        clean = inputs["clean"].rows.set_index("sample_id")

        def evaluate(batch):
            out = []
            for cast, gains in CASTS.items():
                g = torch.tensor(gains)
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
        summary = {"casts": [{"cast": cast, **aggregate.accuracy(g),
                              "flip_rate": float(g.loc[clean.loc[g["sample_id"], "correct"].to_numpy(), "flipped"].mean())}
                             for cast, g in rows.groupby("condition", sort=False)]}
        worst = max(summary["casts"], key=lambda c: c["flip_rate"])
        findings = ([f"A {worst['cast']} colour cast flips {100 * worst['flip_rate']:.0f}% of the correct predictions."]
                    if worst["flip_rate"] > 0.1 else [])
        return CheckResult(self.name, rows, summary, findings=findings)
