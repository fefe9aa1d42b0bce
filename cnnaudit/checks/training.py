"""The training-set audit: is the test set leaking from training, which groups did the model barely see,
and which evaluation images look like nothing in training?

Inputs: the audited images with their clean results, the training set (`--train-data`, read for this
audit only: the model is not evaluated on it, only embedded) and its metadata. Procedure, in one
decoding pass per set: 32 px greyscale thumbnails, a hash of the decoded pixels and an embedding
(model/embeddings.py); then (bias/training.py) exact and near copies between the sets and shared group
identifiers (`--group-id`), the representation of every metadata attribute the two sets share, class
balance, and each evaluation image's distance to its nearest training images against the training set's
own distances. Outputs: one row per evaluated image (condition `training`) with `leaked`, `leak_kind`,
`ood_distance` and `far`; summary `training` {leakage, leakage_counts, near_copy_threshold (the calibrated
distance, bias/training.py), group_id_blank (with --group-id), representation, class_balance,
ood}; findings for any leak, for under-represented groups that do worse, and for far images that do worse.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import aggregate
from ..schema import Constraint, Count, Doc, NotRequired, Share
from ..bias import training as tr
from ..bias.properties import grey_thumbnails, image_properties
from ..findings import Finding, fmt_p
from ..model.embeddings import embed_batch, embedding_layer, stack
from ..options import OptionError, option
from ..datauri import thumbnail_uri
from ..stats import ALPHA, fisher_pair, holm, proportion, wilson_ci
from .base import Check, CheckResult
from .registry import register

MAX_LISTED = 1000  # leakage pairs listed in summary.json (all are counted, and flagged in the rows)
OOD_QUANTILE = 0.95  # an evaluation image is far when its distance exceeds 95% of training images' own
MIN_EVAL = 30  # evaluation images a group needs before it is judged under-represented
EXAMPLES = 6


@dataclass
class TrainingOptions:
    group_id: str | None = option(None, flag="--group-id", metavar="COLUMN",
                                  help="a metadata column identifying the source (patient, device, session) in "
                                       "both sets: an identifier in both is leakage")
    train_eval: bool = option(False, flag="--train-eval", switch=True, choices=(True, False),
                              help="also evaluate the model on the training images: training accuracy and the gap "
                                   "to evaluation accuracy")

    def check_data(self, dataset, config=None) -> None:
        if self.group_id is not None and self.group_id not in dataset.attributes:
            raise OptionError("group_id", self.group_id, "not a metadata column of DATA (columns: "
                              f"{', '.join(dataset.attributes) or 'none: no metadata.csv'})")


# --- summary.json's `training` section (Check.section: the published schema is generated from it) ---
class Leak(TypedDict):
    """An evaluation image that is also in the training set: an exact or near copy, or one sharing a
    group identifier (--group-id) with a training image."""
    train_path: str
    eval_path: Any
    kind: Literal["exact", "near", "group"]
    distance: Any


class Representation(TypedDict):
    """One value of a metadata attribute: its count and share in each set, and accuracy on its images."""
    value: Any
    train_n: Count
    train_share: Share
    eval_n: Any
    eval_share: Any
    eval_accuracy: Any


class NearCopyThreshold(TypedDict):
    """The distance under which an evaluation image is a near copy of a training image."""
    threshold: Annotated[float, Constraint(minimum=0)]
    calibrated: bool
    bound: float
    floor: float
    reference_distance: float | None
    n_reference: Count


class GroupIdBlank(TypedDict):
    """Images of each set whose group identifier is blank."""
    eval: Count
    train: Count


class TrainingSection(TypedDict):
    """The training-set audit (--train-data): leakage into the evaluation set, how well each group is
    represented in training, class balance and evaluation images unlike anything in training."""
    leakage: list[Leak]
    leakage_counts: Any
    representation: dict[str, list[Representation]]
    class_balance: Any
    ood: Any
    near_copy_threshold: Annotated[NearCopyThreshold, Doc(
        "the near-copy distance, calibrated on the training set's own nearest-distinct-neighbour distances: "
        "fraction x their reference_quantile quantile, clipped to [floor, bound]; bound when fewer than 20 such "
        "distances exist (calibrated false)")]
    group_id_blank: NotRequired[Annotated[GroupIdBlank, Doc(
        "with --group-id: images of each set whose identifier is blank (never a shared group)")]]


@register
class TrainingCheck(Check):
    name = "training"
    title = "Training set"
    template = "sections/training.html.j2"
    section = TrainingSection
    inputs = ("train_data",)
    options_type = TrainingOptions
    lower_is_better = ("training.",)

    @staticmethod
    def card_metrics(section) -> list[dict]:
        return []  # not in the card's model-index header; the card's "Training data" section shows it

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:
        counts, ood = section.get("leakage_counts") or {}, section.get("ood") or {}
        out = {}
        if "share_eval_leaked" in counts:
            out["training.share_eval_leaked"] = counts["share_eval_leaked"]
        if ood.get("share_far") is not None:
            out["training.share_far"] = ood["share_far"]
        return out

    def _scan(self, ctx, dataset, ids, desc, predict_too: bool = False):
        """Thumbnails, pixel hashes and embeddings of `ids` of `dataset` (and the model's predictions, with
        predict_too), in one decoding pass."""
        layer = embedding_layer(ctx.loaded)

        def measure(batch):
            props = image_properties(batch.x)
            predicted = None
            if predict_too:
                with torch.no_grad():
                    predicted = ctx.model(batch.x.to(ctx.device)).argmax(dim=1).cpu().numpy()
            return (batch.sample_ids, grey_thumbnails(batch.x, 32), props["pixel_hash"],
                    embed_batch(ctx.model, layer, batch.x, ctx.device, props), predicted)

        done = ctx.map_batches(measure, ids, desc=desc, dataset=dataset)
        emb, source = stack([d[3] for d in done])
        return {"ids": np.concatenate([d[0] for d in done]) if done else np.zeros(0, dtype=np.int64),
                "big": np.concatenate([d[1] for d in done]) if done else np.zeros((0, 32, 32), np.uint8),
                "hash": [h for d in done for h in d[2]], "emb": emb, "source": source,
                "predicted": np.concatenate([d[4] for d in done]) if predict_too and done else None}

    def run(self, ctx, results) -> CheckResult:
        train_ds, seed = ctx.train_dataset, ctx.config.seed
        clean = results["clean"].rows.reset_index(drop=True)
        ev = self._scan(ctx, ctx.dataset, clean["sample_id"].to_numpy(), "training: evaluation images")
        tn = self._scan(ctx, train_ds, train_ds.table["sample_id"].to_numpy(), "training: training images",
                        predict_too=self.opts.train_eval)
        train_paths = [train_ds.path_of(int(s)) for s in tn["ids"]]
        order = pd.Series(np.arange(len(ev["ids"])), index=ev["ids"]).loc[clean["sample_id"]].to_numpy()
        correct = clean["correct"].astype(bool).to_numpy()

        leaks, calibration = self._leakage(ctx, clean, ev, tn, train_paths, order, seed)
        kind = np.full(len(clean), "", dtype=object)
        for leak in reversed(leaks):  # the first listed kind per image wins: exact, near, group
            kind[leak["row"]] = leak["kind"]
        leaked = kind != ""
        eval_d, ref_d = tr.ood_distances(tn["emb"], ev["emb"][order], seed=seed)
        threshold = float(np.quantile(ref_d, OOD_QUANTILE))
        far = eval_d > threshold

        rows = ctx.base_rows(clean["sample_id"]).assign(check=self.name, condition="training", leaked=leaked,
                                                        leak_kind=kind, ood_distance=np.round(eval_d, 6), far=far)
        table = train_ds.table
        summary = {
            "n_train": int(len(tn["ids"])), "n_train_skipped": int(len(train_ds.table) - len(tn["ids"])),
            "embedding": tn["source"],
            "leakage": [{k: v for k, v in leak.items() if k != "row"} for leak in leaks[:MAX_LISTED]],
            "leakage_counts": _leak_counts(leaks, leaked, correct),
            "near_copy_threshold": calibration,
            **self._blank_ids(clean, ctx.train_dataset.table),
            "class_balance": tr.class_balance(table["label"].to_numpy(), clean["label"].to_numpy(), ctx.classes),
            "representation": self._representation(ctx, table, clean),
            "ood": {"threshold": round(threshold, 6), "quantile": OOD_QUANTILE, "n_far": int(far.sum()),
                    "share_far": round(float(far.mean()), 6) if len(far) else None,
                    **_compare(correct[far], correct[~far], "far", "near"),
                    "examples": clean["path"].to_numpy()[np.argsort(-eval_d, kind="stable")[:EXAMPLES]].tolist()},
        }
        if tn["predicted"] is not None:  # --train-eval: how much better it does on what it trained on
            labels = train_ds.table.set_index("sample_id").loc[tn["ids"], "label"].to_numpy()
            k, n = int((tn["predicted"] == labels).sum()), len(labels)
            summary["train_accuracy"] = {"accuracy": proportion(k, n), "accuracy_ci": wilson_ci(k, n), "n": n}
            summary["generalization_gap"] = round(k / n - float(correct.mean()), 6) if n and len(correct) else None
        far_ids = clean["sample_id"].to_numpy()[np.argsort(-eval_d, kind="stable")[:EXAMPLES]]
        report = {"far_examples": self._thumbs(ctx, far_ids)}
        return CheckResult(self.name, rows, summary, report=report,
                           findings=_findings(summary, clean, leaked, far_ids))

    def _leakage(self, ctx, clean, ev, tn, train_paths, order, seed) -> tuple[list[dict], dict]:
        by_hash = {}
        for j, h in enumerate(tn["hash"]):
            by_hash.setdefault(h, j)
        out, done = [], set()
        for row, i in enumerate(order):  # exact copies: the same decoded pixels
            j = by_hash.get(ev["hash"][i])
            if j is not None:
                out.append({"row": row, "train_path": train_paths[j], "eval_path": clean["path"].iat[row],
                            "kind": "exact", "distance": 0.0})
                done.add(row)
        rest = np.array([r for r in range(len(order)) if r not in done], dtype=np.int64)
        near, calibration = tr.near_copies(tn["big"], ev["big"][order[rest]], seed=seed)
        for r, j, d in near:
            row = int(rest[r])
            out.append({"row": row, "train_path": train_paths[j], "eval_path": clean["path"].iat[row],
                        "kind": "near", "distance": d})
        column = self.opts.group_id
        if column is not None:
            if column not in ctx.train_dataset.attributes:
                raise OptionError("group_id", column, "not a metadata column of --train-data (columns: "
                                  f"{', '.join(ctx.train_dataset.attributes) or 'none: no metadata.csv'})")
            # A blank identifier is no identifier: such images share nothing (counted in group_id_blank).
            train_groups = ctx.train_dataset.table
            named = aggregate.group_values(train_groups[column])
            first = dict(zip(named[::-1], train_groups["path"][::-1]))
            for row, value in enumerate(aggregate.group_values(clean[column])):
                if isinstance(value, str) and value in first:
                    out.append({"row": row, "train_path": first[value], "eval_path": clean["path"].iat[row],
                                "kind": "group", "distance": None, "group": value})
        rank = {"exact": 0, "near": 1, "group": 2}
        return sorted(out, key=lambda leak: (rank[leak["kind"]], leak["row"])), calibration

    def _blank_ids(self, clean: pd.DataFrame, train: pd.DataFrame) -> dict:
        """With --group-id: how many images of each set have no identifier (never a shared group)."""
        column = self.opts.group_id
        if column is None:
            return {}
        return {"group_id_blank": {"eval": int((~aggregate.present(clean[column])).sum()),
                                   "train": int((~aggregate.present(train[column])).sum()) if column in train else 0}}

    def _representation(self, ctx, train: pd.DataFrame, clean: pd.DataFrame) -> dict:
        shared = [a for a in aggregate.group_columns(clean, ctx.dataset.attributes)
                  if a in ctx.train_dataset.attributes]
        out = {}
        for attr in shared:
            entries = tr.representation(train, clean, attr, MIN_EVAL)
            by_class = pd.crosstab(aggregate.group_values(train[attr]), train["label"]).reindex(
                columns=range(len(ctx.classes)), fill_value=0)
            for e in entries:
                e["train_by_class"] = (by_class.loc[e["value"]].astype(int).tolist() if e["value"] in by_class.index
                                       else [0] * len(ctx.classes))
            tested = [e for e in entries if e["under_represented"] and e["p_value"] is not None]
            for e, p in zip(tested, holm([e["p_value"] for e in tested])):
                e["p_adjusted"] = p
            out[attr] = entries
        return out

    def _thumbs(self, ctx, ids) -> list[str]:
        images = ctx.decoded(ids)
        return [thumbnail_uri(images[int(s)], side=96) for s in ids if int(s) in images]


def _compare(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> dict:
    """Accuracy of two sets of images (booleans of correct), with intervals and a Fisher exact p-value."""
    ka, na, kb, nb = int(a.sum()), len(a), int(b.sum()), len(b)
    return {f"accuracy_{name_a}": proportion(ka, na), f"accuracy_{name_a}_ci": wilson_ci(ka, na),
            f"accuracy_{name_b}": proportion(kb, nb), f"accuracy_{name_b}_ci": wilson_ci(kb, nb),
            "p_value": fisher_pair(ka, na, kb, nb) if na and nb else None}


def _leak_counts(leaks, leaked, correct) -> dict:
    kinds = pd.Series([leak["kind"] for leak in leaks], dtype=object)
    return {"exact": int((kinds == "exact").sum()), "near": int((kinds == "near").sum()),
            "group": int((kinds == "group").sum()), "n_pairs": len(leaks), "listed": min(len(leaks), MAX_LISTED),
            "n_eval_leaked": int(leaked.sum()),
            "share_eval_leaked": round(float(leaked.mean()), 6) if len(leaked) else 0.0,
            **_compare(correct[leaked], correct[~leaked], "leaked", "not_leaked")}


def _findings(summary, clean, leaked, far_ids) -> list[Finding]:
    out, c = [], summary["leakage_counts"]
    if c["n_eval_leaked"]:
        out.append(Finding(
            "fail", "training", "data", "leakage", f"{c['n_eval_leaked']} evaluation image(s) also appear in training",
            f"{c['exact']} exact, {c['near']} near copies, {c['group']} shared group identifiers; accuracy "
            f"{100 * (c['accuracy_leaked'] or 0):.1f}% on them vs {100 * (c['accuracy_not_leaked'] or 0):.1f}% on the "
            "rest: every number of this audit is inflated by them", effect=c["share_eval_leaked"],
            evidence="#training-leakage", sample_ids=clean["sample_id"].to_numpy()[leaked][:EXAMPLES].tolist()))
    for attr, entries in summary["representation"].items():
        for e in entries:
            if e.get("p_adjusted") is not None and e["p_adjusted"] < ALPHA and e["eval_accuracy"] < e["rest_accuracy"]:
                gap = e["rest_accuracy"] - e["eval_accuracy"]
                out.append(Finding(
                    "fail" if gap >= 0.1 else "warn", "training", "data", f"{attr} = {e['value']}",
                    f"{attr} {e['value']} is {100 * e['train_share']:.1f}% of training and "
                    f"{100 * e['eval_share']:.1f}% of evaluation; accuracy {100 * e['eval_accuracy']:.0f}% vs "
                    f"{100 * e['rest_accuracy']:.0f}%", f"under-represented in training (under half its evaluation "
                    f"share); Fisher exact, Holm-adjusted {fmt_p(e['p_adjusted'])}", effect=gap,
                    p_adjusted=e["p_adjusted"], evidence="#training-representation"))
    ood = summary["ood"]
    # one test in its family (far vs near images): Holm leaves a family of one as it is, so its p is the adjusted one
    worse = ood["p_value"] is not None and ood["p_value"] < ALPHA and ood["accuracy_far"] < ood["accuracy_near"]
    if ood["n_far"] and worse:
        out.append(Finding(
            "warn", "training", "data", "out-of-distribution",
            f"{ood['n_far']} evaluation image(s) look like nothing in training, and the model does worse on them",
            f"accuracy {100 * ood['accuracy_far']:.0f}% on them vs {100 * ood['accuracy_near']:.0f}% (Fisher exact "
            f"{fmt_p(ood['p_value'])})", effect=ood["accuracy_near"] - ood["accuracy_far"], p_adjusted=holm([ood["p_value"]])[0],
            evidence="#training-ood", sample_ids=[int(s) for s in far_ids]))
    return out
