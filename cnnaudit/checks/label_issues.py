"""Label issues: which evaluation labels look wrong?

Inputs: the wrapped model and the audited images with their given labels. Procedure: one forward pass
for each image's predicted probabilities, which are out of sample (the model did not train on the
evaluation set), then confident learning (bias/label_issues.py). Outputs: one row per image
(condition `label_issues`) with `is_label_issue`, `label_issue_score` (self-confidence: the probability
of the given label; low means suspect) and the suggested label; the flagged images ranked by score;
clean accuracy *excluding* them as a sensitivity line beside (never instead of) clean accuracy.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np
import torch

from dataclasses import dataclass

from .. import aggregate
from ..schema import Count, Share
from ..bias.label_issues import find_label_issues
from ..findings import Finding
from ..options import OptionError, option
from ..datauri import thumbnail_uri
from .base import Check, CheckResult
from .registry import register

GALLERY = 12
IN_SAMPLE = ("in-sample: the model was trained on these labels, so its probabilities agree with them more than "
             "they would out of sample; confident learning then finds fewer issues than there are")


@dataclass
class LabelIssueOptions:
    split: str = option("eval", flag="--label-issues", choices=("eval", "train"), metavar="{eval,train}",
                        help="which labels to check: eval (default; the model's probabilities are out of sample) or "
                             "train (needs --train-data; in-sample, so fewer issues are found than there are)")

    def check_data(self, dataset, config) -> None:
        if self.split == "train" and config.train_data is None:
            raise OptionError("split", "train", "checking training labels needs --train-data DIR")


# --- summary.json's `label_issues` section (Check.section: the published schema is generated from it) ---
class LabelIssue(TypedDict):
    """An image whose given label looks wrong: the label the model suggests, and its score (the probability
    of the given label: low means suspect)."""
    path: str
    given_label: Any
    suggested_label: Any
    score: Any


class LabelIssuesSection(TypedDict):
    """Label issues found by confident learning, ranked by score, and clean accuracy without them."""
    n: Count
    n_flagged: Count
    share_flagged: Share
    accuracy_excluding_flagged: Any
    issues: list[LabelIssue]


@register
class LabelIssueCheck(Check):
    name = "label_issues"
    title = "Label issues"
    template = "sections/label_issues.html.j2"
    section = LabelIssuesSection
    options_type = LabelIssueOptions
    # --budget may give it a subset of the evaluation images (planning.py): one forward pass each, as dear as the
    # clean pass (30 of 529 s for a ResNet-18 at 224 px on 1,000 images); training labels are always all checked
    plannable = True

    @classmethod
    def is_plannable(cls, opts) -> bool:
        return opts is None or opts.split != "train"  # the training labels are all checked, whatever the plan

    @staticmethod
    def half_width(section: dict) -> float | None:
        """The Wilson half-width of the share flagged."""
        from ..planning import half_width
        return half_width(section["n_flagged"], section["n"]) if section.get("n") else None

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:
        return {"label_issues.share_flagged": section["share_flagged"]} if "share_flagged" in section else {}

    @staticmethod
    def card_metrics(section) -> list[dict]:
        return []  # not in the card's model-index header; the card's own part shows its evidence

    lower_is_better = ("label_issues.share_flagged",)

    def summarize(self, rows, results, classes, attributes) -> dict:
        flagged = rows[rows["is_label_issue"]].sort_values(["label_issue_score", "sample_id"], kind="stable")
        train = self.opts is not None and self.opts.split == "train"
        clean = results["clean"].rows
        clean = clean[clean["sample_id"].isin(rows["sample_id"])]  # under --budget, the images it was given
        kept = clean[~clean["sample_id"].isin(flagged["sample_id"])]
        excluding = aggregate.accuracy(kept) if not train else {"accuracy": None, "accuracy_ci": None}
        return {"split": "train" if train else "eval", "caveat": IN_SAMPLE if train else None,
                "method": "confident learning (Northcutt et al. 2021), "
                          + ("training set, in-sample probabilities" if train
                             else "evaluation set, out-of-sample probabilities"),
                "n": int(len(rows)), "n_flagged": int(len(flagged)),
                "share_flagged": round(len(flagged) / len(rows), 6) if len(rows) else 0.0,
                "accuracy_excluding_flagged": excluding["accuracy"],
                "accuracy_excluding_flagged_ci": excluding["accuracy_ci"],
                "issues": [{"path": r.path, "given_label": r.label_name, "suggested_label": classes[int(r.suggested)],
                            "score": round(float(r.label_issue_score), 6)} for r in flagged.itertuples()]}

    def run(self, ctx, results) -> CheckResult:
        def probabilities(batch):
            with torch.no_grad():
                p = torch.softmax(ctx.model(batch.x.to(ctx.device)).float(), dim=1)
            return batch.sample_ids, p.cpu().numpy()

        train = self.opts.split == "train"
        dataset = ctx.train_dataset if train else ctx.dataset
        done = ctx.map_batches(probabilities, dataset.table["sample_id"].to_numpy() if train else None,
                               desc="label issues", dataset=dataset)
        ids = np.concatenate([i for i, _ in done])
        probs = np.concatenate([p for _, p in done])
        table = dataset.table.set_index("sample_id").loc[ids].reset_index()
        issue, suggested, score = find_label_issues(table["label"].to_numpy(), probs)
        base = table[["sample_id", "path", "label", "label_name"]] if train else ctx.base_rows(ids)
        rows = base.assign(check=self.name, condition="label_issues_train" if train else "label_issues",
                           is_label_issue=issue, label_issue_score=np.round(score, 6), suggested=suggested)
        rows["suggested_label"] = np.array(ctx.classes, dtype=object)[suggested]
        summary = self.summarize(rows, results, ctx.classes, ctx.dataset.attributes)
        top = rows[rows["is_label_issue"]].sort_values(["label_issue_score", "sample_id"], kind="stable").head(GALLERY)
        images = {s: thumbnail_uri(x, side=96) for s, x in ctx.decoded(top["sample_id"], dataset=dataset).items()}
        gallery = [{"image": images[int(r.sample_id)], "path": r.path, "given": r.label_name,
                    "suggested": r.suggested_label, "score": float(r.label_issue_score)}
                   for r in top.itertuples() if int(r.sample_id) in images]
        findings = []
        if summary["n_flagged"] and train:
            findings.append(Finding(
                "warn", self.name, "data", "training labels", f"{summary['n_flagged']} training image(s) look "
                "mislabeled", f"confident learning flags {100 * summary['share_flagged']:.1f}% of the training labels "
                f"({IN_SAMPLE})", effect=summary["share_flagged"], evidence="#label_issues"))
        elif summary["n_flagged"]:
            findings.append(Finding(
                "warn", self.name, "data", "labels", f"{summary['n_flagged']} evaluation image(s) look mislabeled",
                f"confident learning flags {100 * summary['share_flagged']:.1f}% of the labels; clean accuracy "
                f"without them {100 * summary['accuracy_excluding_flagged']:.1f}% (a sensitivity line, not a "
                "correction)", effect=summary["share_flagged"], evidence="#label_issues",
                sample_ids=top["sample_id"].astype(int).head(6).tolist(),
                members=rows.loc[rows["is_label_issue"], "sample_id"]))
        return CheckResult(self.name, rows, summary, report={"gallery": gallery}, findings=findings)
