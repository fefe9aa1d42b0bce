"""Adversarial robustness: how much accuracy survives an attacker with an L-inf or L2 budget eps?

Inputs: the wrapped model (pixels in [0, 1]), the clean rows, an eps grid per norm.
Procedure, per batch of clean-correct samples and per norm, eps ascending (a sound cascade):
  1. FGSM on every sample: a cheap attack, and a standalone curve for the sanity checks.
  2. A sample broken at eps stays broken at every larger eps (its example lies inside the larger ball),
     so only survivors are attacked further.
  3. Survivors of FGSM get PGD; survivors of PGD get APGD with the DLR loss, started from PGD's last
     iterate (the highest-loss point known; on the digits benchmark this warm start broke 2 more of 300
     samples than APGD's random start, at no cost); survivors of that get targeted APGD-DLR (APGD-T)
     against the 3 classes that score highest on the clean image. `attack_strength="thorough"` has
     AutoAttack's attacks: more steps and restarts, APGD-CE, APGD-T on 9 targets, Square with 5,000 queries.
All losses are invariant to the scale of the logits (attacks/losses.py), so a model with saturated
softmax cannot hide behind vanishing cross-entropy gradients. Every adversarial example is checked to
lie inside its eps ball and in [0, 1].
Outputs: one row per sample, norm and eps (condition `adv_<norm>_<eps>`), with the prediction on the
worst-case example, the attack that found it, the smallest eps at which the sample broke, and whether
it is still correct once its example is saved as an 8-bit image (`correct_8bit`). Samples misclassified
clean are not attacked and count as not robust. Robust accuracy (worst case, and FGSM alone), per class
and per subgroup, with Wilson intervals, is derived from these rows.
Sanity checks after Carlini et al. 2019, "On Evaluating Adversarial Robustness", run on a seeded subset,
plus the attack self-test (attacks/self_test.py). When any fails, gradients may be masked (Athalye et
al. 2018), so the gradient-free Square attack runs on every sample the gradient attacks left standing,
and if it breaks clearly more of them than noise would (gradient_free_check), masking is confirmed:
`gradient_masking` is none | suspected | confirmed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

import numpy as np
import pandas as pd
import torch

from ... import aggregate
from ...schema import CI, Count, Doc, NotRequired, Share
from ...attacks import ATTACKS, AttackRunner, AttackSpec
from ...attacks.ball import check_bounds
from ...attacks.escalate import clean_spread, scaled_margin, escalate
from ...attacks.eot import with_draws
from ...budgets import eps_label
from ...data.sampling import seeded_subset
from ...predict import predict
from ...datauri import amplify, to_data_uri
from ..base import Check, CheckResult
from ..registry import register
from ...findings import Finding
from .options import NEAR_MARGIN, THOROUGH, AdversarialOptions
from .rules import MIN_ROBUST_ACCURACY
from .sanity import (SANITY_SUBSET, gradient_free_check, masking_findings, masking_verdict, monotone_checks,
                     sanity_checks)

# Each cascade stage attacks only the samples still standing: at a large eps PGD leaves a few of a batch for
# APGD, and a pass over 8 samples costs several times a sample what one over 64 does (on CPU). So several
# batches are attacked together, their survivors sharing full passes (attacks/slots.py refills a finished
# sample's slot), up to POOL_BYTES of images per call: the call holds ~10 copies of them (each eps's FGSM
# examples, best examples, attempts); larger pools measured faster on ResNet-18 (README, Speed).
# A pool is fixed by the data, never by the number of processes, so
# torchrun shards the same pools and gets the same numbers; a set is cut into at least MIN_POOLS pools,
# so that processes share the attacks of a small set too (16 batches would be the demo's whole set).
POOL_BYTES = 64 * 2**20
MAX_POOLED_BATCHES = 16
MIN_POOLS = 2


def pooled_batches(n_samples: int, batch_size: int, channels: int, size: tuple[int, int]) -> int:
    by_bytes = POOL_BYTES // (batch_size * 4 * channels * size[0] * size[1])
    by_count = -(-n_samples // (batch_size * MIN_POOLS))
    return int(max(1, min(by_bytes, by_count, MAX_POOLED_BATCHES)))


def condition_name(norm: str, eps: float) -> str:
    return f"adv_{norm}_{eps:.6g}"


# --- summary.json's `adversarial` section (Check.section: the published schema is generated from it) ---
class AdversarialResult(TypedDict):
    """Robust accuracy under one attack (fgsm, or worst_case: the whole cascade) at one norm and budget."""
    attack: str
    norm: Literal["linf", "l2"]
    eps: Any
    eps_label: Any
    robust_accuracy: Share
    robust_accuracy_ci: CI
    n: Count
    n_near_boundary: NotRequired[Annotated[Count, Doc(
        "worst case: robust samples whose scale-free margin after the last attack is under near_boundary_margin "
        "(since 0.5.0)")]]
    robust_accuracy_if_near_broken: NotRequired[Annotated[float, Doc(
        "worst case: robust accuracy if every near-boundary sample broke (since 0.5.0)")]]
    near_boundary_exceeds_ci: NotRequired[Annotated[bool, Doc(
        "worst case: n_near_boundary / n exceeds half the width of robust_accuracy_ci (a near_boundary finding)")]]


class EscalationRound(TypedDict):
    """One round of escalation: its attack, and the margin under which a survivor gets it."""
    attack: str
    below_margin: Any


class Escalation(TypedDict):
    """Margin-guided escalation after the cascade."""
    rounds: list[EscalationRound]
    near_boundary_margin: float


class AdversarialSection(TypedDict):
    """Adversarial robustness: robust accuracy per norm and budget, per class and per group, and the sanity
    checks that say whether gradients may be masked."""
    results: list[AdversarialResult]
    per_class: Any
    per_group: Any
    sanity: Any
    gradient_masking: Literal["none", "suspected", "confirmed", "not_applicable"]
    gradient_masking_suspected: bool
    escalation: NotRequired[Annotated[Escalation, Doc(
        "margin-guided escalation after the cascade (since 0.5.0): each round's attack and the margin under "
        "which a survivor gets it; empty rounds for fast, thorough, --attacks and the art backend")]]
    threat_model: NotRequired[Annotated[Literal["gradients", "query_only"], Doc(
        "query_only: the model has no gradients, Square is the only attack and robust accuracy is an upper "
        "bound; the gradient sanity checks have passed = null, applicable = false (since 0.6.0)")]]


@register
class AdversarialCheck(Check):
    name = "adversarial"
    title = "Adversarial robustness"
    template = "sections/adversarial.html.j2"
    section = AdversarialSection
    outcomes = ("correct",)  # right under every attack at the budget (condition), the worst case per image
    finding_kinds = ("robustness_budget", "masking", "near_boundary")
    options_type = AdversarialOptions
    rule_kinds = (MIN_ROBUST_ACCURACY,)
    plannable = True  # --budget may give it a subset of the images (planning.py)

    @staticmethod
    def verdicts(section: dict) -> dict[str, str]:
        return {"gradient masking": str(section["gradient_masking"])} if section.get("gradient_masking") else {}

    @staticmethod
    def metrics(section: dict) -> dict[str, float]:
        return {f"adversarial.{r['attack']}.{r['norm']}.{r['eps_label']}": r["robust_accuracy"]
                for r in section.get("results", []) if r.get("robust_accuracy") is not None}

    @staticmethod
    def incomparable(baseline, candidate) -> str | None:
        # Square's upper bound on one side, the white-box cascade on the other: a difference is the attack's
        threats = baseline.get("threat_model"), candidate.get("threat_model")
        if "query_only" in threats and threats[0] != threats[1]:
            return f"the baseline was attacked as {threats[0]}, this audit as {threats[1]}"
        return None

    @staticmethod
    def card_metrics(section) -> list[dict]:
        return [{"type": "robust_accuracy", "value": r["robust_accuracy"],
                 "name": f"Robust accuracy, worst case, {r['norm']} eps {r['eps_label']}"}
                for r in section.get("results", []) if r.get("attack") == "worst_case" and r.get("robust_accuracy") is not None]

    def summarize(self, rows, results, classes, attributes) -> dict:
        return summarize_adversarial(rows, self.opts.grid(), classes, attributes)

    def run(self, ctx, results) -> CheckResult:
        opts = self.opts
        grid = opts.grid()
        gallery_norm = next(iter(grid))  # the gallery shows the first norm's largest budget
        draws = results["clean"].summary["randomness"]["eot_draws"] or 1  # > 1: a randomized model, EOT
        runner = AttackRunner(with_draws(ctx.model, draws), num_classes=len(ctx.classes),
                              batch_size=ctx.config.batch_size, backend=opts.backend)
        query_only = not ctx.model.gradients
        # a model that answers queries only (model/query.py) gets the gradient-free attack alone
        cascade = [query_attack(opts)] if query_only else opts.cascade()
        rounds = () if query_only else opts.escalation()
        clean = ctx.clean_rows.set_index("sample_id")
        correct_ids = clean.index[clean["correct"].astype(bool)].to_numpy()
        size, n_classes = ctx.config.gallery_size, len(ctx.classes)
        seen: list[dict] = []  # this process's gallery so far: once full, its later batches cannot contribute

        def attack(batch):
            x, y = batch.x.to(ctx.device), batch.y.to(ctx.device)
            parts, candidates = [], []
            full = len(seen) >= size
            for norm, eps_list in grid.items():
                parts.extend(self._attack_batch(ctx, runner, cascade, rounds, batch.sample_ids, x, y, norm, eps_list,
                                                candidates if norm == gallery_norm and not full else None))
            seen[:] = _gallery(seen + candidates, size, n_classes)
            # one frame per batch: a small frame costs kilobytes, and there are budgets × batches of them
            return pd.concat(parts, ignore_index=True), candidates

        pool = pooled_batches(len(correct_ids), ctx.config.batch_size, ctx.model.channels, ctx.model.input_size)
        done = ctx.map_batches(attack, correct_ids, desc="adversarial", batches_per_call=pool)
        parts = [batch_rows for batch_rows, _ in done]
        gallery = _gallery([g for _, candidates in done for g in candidates], size, n_classes)
        rows = self._assemble_rows(ctx, clean, parts, grid, fgsm=not query_only)
        summary = self.summarize(rows, {}, ctx.classes, ctx.dataset.attributes)
        extra: list[dict] = []
        if query_only:
            sanity = monotone_checks(grid, summary["results"]) + not_applicable(grid)
            square_info = {"queries": cascade[0].steps, "automatic": False}
            findings = [query_only_note(cascade[0].steps, ignored=opts.attacks)]
        else:
            sanity = self._sanity(ctx, runner, correct_ids, grid, opts, summary, cascade)
            rows, summary, sanity, square_info, findings = self._adaptive(ctx, runner, rows, summary, sanity, grid,
                                                                          cascade, pool, extra)
        gallery = _gallery(gallery + extra, size, n_classes)
        summary["sanity"] = sanity
        masking = masking_verdict(sanity)
        summary["gradient_masking"] = masking
        # gradients: every attack ran; query_only: Square alone, so robust accuracy is an upper bound (since 0.6.0)
        summary["threat_model"] = "query_only" if query_only else "gradients"
        summary["attack_strength"] = opts.attack_strength
        summary["cascade"] = [s.name for s in cascade]
        summary["square"] = square_info
        summary["eot_draws"] = draws if draws > 1 else None
        # two classes have no DLR (it needs a third logit): both losses are the logit margin (attacks/losses.py)
        summary["losses"] = {name: type(fn).__name__ for name, fn in runner.losses.items()}
        clean_accuracy = aggregate.accuracy(results["clean"].rows)["accuracy"]
        summary["escalation"] = {"rounds": [{"attack": r.attack.name, "below_margin": r.below}
                                            for r in rounds], "near_boundary_margin": NEAR_MARGIN}
        attacked = rows[rows["sample_id"].isin(correct_ids)]  # the rest were wrong clean: not attacked
        findings.extend(masking_findings(masking, sanity) + budget_findings(summary, grid, clean_accuracy, attacked)
                        + _saved_findings(summary) + near_boundary_findings(summary))
        return CheckResult(self.name, rows, summary, findings=findings,
                           report={"gallery": gallery})

    def _adaptive(self, ctx, runner, rows, summary, sanity, grid, cascade, pool, gallery: list):
        """Square on the survivors when a sanity check failed (1,000 queries; AutoAttack's 5,000 once masking
        is confirmed), and the gradient-free check whenever Square ran. Returns the updated rows, summary
        and sanity checks, {queries, automatic} or None, and findings; appends Square's examples to gallery."""
        findings = []
        square_run = next((s for s in cascade if s.method == "square"), None)
        automatic = square_run is None and not all(s["passed"] for s in sanity)
        if automatic:
            square_run = ATTACKS["square"]
            failed = [s["check"] for s in sanity if not s["passed"]]
            rows, extra = self._square_pass(ctx, runner, rows, grid, square_run, pool)
            gallery.extend(extra)
            findings.append(Finding("info", self.name, "note", "square", f"Gradient masking sanity check(s) "
                                    f"failed ({', '.join(failed)}), so the gradient-free Square attack "
                                    f"({square_run.steps} queries a sample) ran on every sample the gradient attacks "
                                    "left standing; its breaks are in the worst case."))
        if square_run is None:
            return rows, summary, sanity, None, findings
        sanity = [*sanity, gradient_free_check(rows, grid)]
        if not sanity[-1]["passed"] and square_run.steps < THOROUGH["square_thorough"].steps:
            # masking confirmed: gradients are no guide here and the gradient-free attack is what measures the
            # model, so it gets AutoAttack's budget on what still stands (benchmarks/bench_autoattack.py)
            square_run = THOROUGH["square_thorough"]
            rows, extra = self._square_pass(ctx, runner, rows, grid, square_run, pool)
            gallery.extend(extra)
            findings.append(Finding("info", self.name, "note", "square", "Gradient masking confirmed, so Square "
                                    f"ran again with {square_run.steps} queries a sample on what was still standing."))
            sanity[-1] = gradient_free_check(rows, grid)
        summary = self.summarize(rows, {}, ctx.classes, ctx.dataset.attributes)
        # the monotonicity checks read the worst case, which Square changed
        sanity = monotone_checks(grid, summary["results"]) + [s for s in sanity
                                                              if not s["check"].startswith("monotone_in_eps_")]
        return rows, summary, sanity, {"queries": square_run.steps, "automatic": automatic}, findings

    def _square_pass(self, ctx, runner, rows: pd.DataFrame, grid, attack: AttackSpec, pool: int):
        """Square on the samples the cascade left standing, eps ascending per norm; a sample it breaks stays
        broken at every larger eps (its example lies inside the larger ball). Returns the updated rows and
        gallery candidates (its examples at the first norm's largest eps)."""
        standing = rows.loc[rows["correct"], ["sample_id", "norm", "eps"]]
        ids = np.sort(standing["sample_id"].unique())
        alive = set(map(tuple, standing[["sample_id", "norm", "eps"]].itertuples(index=False)))
        seed = ctx.config.seed

        def attack_pool(batch):
            x, y = batch.x.to(ctx.device), batch.y.to(ctx.device)
            spread = clean_spread(runner.model, x, ctx.config.batch_size)
            out, candidates = [], []
            for norm, eps_list in grid.items():
                broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
                x_best = x.clone()
                first = np.full(len(x), np.nan)
                for eps in eps_list:
                    todo = [i for i, sid in enumerate(batch.sample_ids)
                            if (int(sid), norm, eps) in alive and not broken[i]]
                    if todo:
                        t = torch.as_tensor(todo, device=x.device)
                        adv = check_bounds(runner.run(attack, x[t], y[t], eps=eps, norm=norm, seed=seed,
                                                      ids=np.asarray(batch.sample_ids)[todo]), x[t], eps, norm)
                        hit = ~torch.as_tensor(_predict(runner.model, ctx.config.batch_size, adv, y[t])["correct"],
                                               device=x.device)
                        x_best[t[hit]] = adv[hit]
                        broken[t[hit]] = True
                        first[t[hit].cpu().numpy()] = eps
                    now = [i for i, sid in enumerate(batch.sample_ids)
                           if (int(sid), norm, eps) in alive and broken[i]]
                    if now:
                        t = torch.as_tensor(now, device=x.device)
                        cols = _predict(runner.model, ctx.config.batch_size, x_best[t], y[t])
                        saved = _predict(runner.model, ctx.config.batch_size, saved_8bit(x_best[t]), y[t])
                        margin, _ = scaled_margin(runner.model, x_best[t], y[t], spread[t], ctx.config.batch_size)
                        out.append(pd.DataFrame({"sample_id": np.asarray(batch.sample_ids)[now], "norm": norm,
                                                 "eps": eps, "first": first[now], **cols,
                                                 "margin": margin.cpu().numpy().astype(np.float64),
                                                 "correct_8bit": cols["correct"] | saved["correct"]}))
                        if norm == next(iter(grid)) and eps == eps_list[-1]:
                            candidates.extend(_gallery_entry(ctx, batch.sample_ids[i], norm, eps, x[i], x_best[i], y[i],
                                                             p, c, attack.name)
                                              for i, p, c in zip(now, cols["prediction"], cols["confidence"])
                                              if not cols["correct"][now.index(i)])
            return (pd.concat(out, ignore_index=True) if out else None), candidates

        done = ctx.map_batches(attack_pool, ids, desc="square", batches_per_call=pool)
        candidates = [g for _, part in done for g in part]
        found = [f for f, _ in done if f is not None]
        if not found:
            return rows, candidates
        upd = pd.concat(found, ignore_index=True)
        key = ["sample_id", "norm", "eps"]
        at = pd.MultiIndex.from_frame(rows[key]).get_indexer(pd.MultiIndex.from_frame(upd[key]))
        rows = rows.copy()
        for col in ("prediction", "correct", "confidence", "loss", "correct_8bit", "margin"):
            rows.iloc[at, rows.columns.get_loc(col)] = upd[col].to_numpy()
        rows.iloc[at, rows.columns.get_loc("prediction_name")] = [ctx.classes[p] for p in upd["prediction"]]
        rows.iloc[at, rows.columns.get_loc("attack")] = attack.name
        first = upd.groupby(["sample_id", "norm"])["first"].min()  # where Square first broke each sample
        fill = first.reindex(pd.MultiIndex.from_frame(rows[["sample_id", "norm"]])).to_numpy()
        rows["min_eps"] = np.fmin(rows["min_eps"].to_numpy(dtype=float), fill)  # fmin: NaN only where both are
        rows["correct"] = rows["correct"].astype(bool)
        rows["correct_8bit"] = rows["correct_8bit"].astype(bool)
        return rows, candidates

    def _attack_batch(self, ctx, runner, cascade, rounds, sample_ids, x, y, norm, eps_list,
                      gallery) -> list[pd.DataFrame]:
        """Rows for one batch and norm; appends examples at the largest eps to `gallery` unless it is None."""
        n = len(x)
        width = ctx.config.batch_size
        broken = torch.zeros(n, dtype=torch.bool, device=x.device)
        found_by = np.array([""] * n, dtype=object)
        first_eps = np.full(n, np.nan)
        x_best = x.clone()  # the adversarial example of broken samples; the lowest-margin point of survivors
        m_best = torch.zeros(n, device=x.device)
        spread = clean_spread(runner.model, x, width)  # the unit of each sample's margin
        seed = ctx.config.seed
        ids = np.asarray(sample_ids)
        out = []
        with_fgsm = cascade[0].name == "fgsm"  # always, except on a query-only model (no gradients)
        fgsm_all = runner.fgsm(x, y, eps_list=eps_list, norm=norm, seed=seed) if with_fgsm else None
        for eps in eps_list:
            if with_fgsm:
                fgsm_adv = check_bounds(fgsm_all[eps], x, eps, norm)
                fgsm_correct = _predict(runner.model, width, fgsm_adv, y)["correct"]
            for k, attack in enumerate(cascade):
                alive = (~broken).nonzero()[:, 0]
                if not len(alive):
                    break
                if k == 0 and with_fgsm:
                    x_att = fgsm_adv[alive]
                else:
                    x_att = check_bounds(runner.run(attack, x[alive], y[alive], eps=eps, norm=norm, seed=seed + k,
                                                    ids=ids[alive.cpu().numpy()], start=x_best[alive]),
                                         x[alive], eps, norm)
                m_att, hit = scaled_margin(runner.model, x_att, y[alive], spread[alive], width)
                # keep each survivor's lowest-margin point: the next stage starts there, escalation ranks by it
                keep = hit | (m_att < m_best[alive]) if k else torch.ones_like(hit)
                x_best[alive[keep]] = x_att[keep]
                m_best[alive[keep]] = m_att[keep]
                new = alive[hit]
                broken[new] = True
                new_np = new.cpu().numpy()
                found_by[new_np] = attack.name
                first_eps[new_np] = eps
            alive = (~broken).nonzero()[:, 0]
            if rounds and len(alive):
                esc = escalate(runner, rounds, x[alive], y[alive], x_best[alive], spread[alive], eps=eps, norm=norm,
                               seed=seed, ids=ids[alive.cpu().numpy()])
                x_best[alive], m_best[alive] = esc["x_best"], esc["margin"]
                new = alive[esc["broken"]]
                broken[new] = True
                new_np = new.cpu().numpy()
                found_by[new_np] = esc["found_by"][esc["broken"].cpu().numpy()]
                first_eps[new_np] = eps
            cols = _predict(runner.model, width, x_best, y)
            saved = _predict(runner.model, width, saved_8bit(x_best), y)
            out.append(pd.DataFrame({"sample_id": sample_ids, "norm": norm, "eps": eps, "attack": found_by.copy(),
                                     **({"fgsm_correct": fgsm_correct} if with_fgsm else {}), **cols,
                                     "margin": m_best.cpu().numpy().astype(np.float64),
                                     "correct_8bit": cols["correct"] | saved["correct"]}))
            if gallery is not None and eps == eps_list[-1]:
                # this batch's candidates; _gallery picks from all batches' in order
                for i in broken.nonzero()[:, 0].tolist():
                    if _gallery_has_room(gallery, ctx.classes[int(y[i])], ctx.config.gallery_size, len(ctx.classes)):
                        gallery.append(_gallery_entry(ctx, sample_ids[i], norm, eps, x[i], x_best[i], y[i],
                                                      cols["prediction"][i], cols["confidence"][i], found_by[i]))
        for df in out:
            df["min_eps"] = first_eps
        return out

    def _assemble_rows(self, ctx, clean: pd.DataFrame, parts, grid, fgsm: bool = True) -> pd.DataFrame:
        attacked = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            columns=["sample_id", "norm", "eps", "attack", "fgsm_correct", "prediction", "correct", "confidence",
                     "loss", "min_eps", "correct_8bit", "margin"])
        wrong = clean[~clean["correct"].astype(bool)]
        frames = [attacked]
        for norm, eps_list in grid.items():
            for eps in eps_list:  # misclassified clean: not attacked, not robust at any eps
                frames.append(pd.DataFrame({
                    "sample_id": wrong.index.to_numpy(), "norm": norm, "eps": eps, "attack": "clean_error",
                    "fgsm_correct": False, "prediction": wrong["prediction"].to_numpy(), "correct": False,
                    "correct_8bit": False,
                    "confidence": wrong["confidence"].to_numpy(), "loss": wrong["loss"].to_numpy(), "min_eps": 0.0,
                    "margin": np.nan}))
        res = pd.concat([f for f in frames if len(f)], ignore_index=True)
        if not fgsm:  # a query-only model: no FGSM ran
            res = res.drop(columns="fgsm_correct")
        res["correct"] = res["correct"].astype(bool)
        if "fgsm_correct" in res:
            res["fgsm_correct"] = res["fgsm_correct"].astype(bool)
        res["correct_8bit"] = res["correct_8bit"].astype(bool)
        res = res.sort_values(["norm", "eps", "sample_id"], kind="stable").reset_index(drop=True)
        rows = ctx.base_rows(res["sample_id"])
        rows["check"] = self.name
        rows["condition"] = aggregate.shared_labels(condition_name, res["norm"], res["eps"])
        for col in ("norm", "eps", "attack", "min_eps", "prediction"):
            rows[col] = res[col].to_numpy()
        rows["prediction_name"] = [ctx.classes[p] for p in res["prediction"]]
        for col in ("correct", "confidence", "loss", "fgsm_correct", "correct_8bit"):
            if col in res:
                rows[col] = res[col].to_numpy()
        rows["margin"] = res["margin"].to_numpy(dtype=float)
        return rows

    def _sanity(self, ctx, runner, correct_ids, grid, opts, summary, cascade) -> list[dict]:
        subset = seeded_subset(correct_ids, SANITY_SUBSET, ctx.config.seed)
        batches = list(ctx.batches(subset, progress=False))
        x = torch.cat([b.x for b in batches]).to(ctx.device) if batches else None
        y = torch.cat([b.y for b in batches]).to(ctx.device) if batches else None
        return sanity_checks(runner.model, runner, x, y, grid, summary["results"], opts, ctx.config.seed, ids=subset,
                             cascade=cascade)


def query_attack(opts: AdversarialOptions) -> AttackSpec:
    """The attack on a query-only model: Square, with AutoAttack's 5,000 queries at thorough, else 1,000."""
    return THOROUGH["square_thorough"] if opts.attack_strength == "thorough" else ATTACKS["square"]


def not_applicable(grid) -> list[dict]:
    """The gradient sanity checks on a model without gradients: listed, marked not applicable (never passed)."""
    why = "not applicable: the model answers queries only, so no gradient attack ran"
    names = [f"{c}_{norm}" for norm in grid for c in ("iterative_beats_single_step", "large_eps_reaches_zero")]
    return [{"check": name, "passed": None, "applicable": False, "detail": why}
            for name in (*names, "attack_self_test", "gradients_usable")]


def query_only_note(queries: int, ignored=None) -> Finding:
    return Finding("info", "adversarial", "note", "query-only",
                   "Robust accuracy is an upper bound: the model answers queries only",
                   f"Without gradients the only attack is Square (gradient-free) with {queries} queries per sample and "
                   "budget; a white-box attacker with the weights may break more, so read these numbers as what an "
                   "attacker with query access alone achieves, at most."
                   + (f" The attacks given with --attacks ({', '.join(ignored)}) need gradients and did not run."
                      if ignored else ""), evidence="#adversarial")


def _predict(model, size: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """predict() a batch at a time: an attack call holds pooled_batches() batches of images."""
    return aggregate.stack_columns([predict(model, x[i:i + size], y[i:i + size])
                                    for i in range(0, max(len(x), 1), size)])


def _gallery_entry(ctx, sample_id, norm, eps, x, x_adv, label, prediction, confidence, attack) -> dict:
    return {"sample_id": int(sample_id), "norm": norm, "eps": eps_label(norm, eps), "original": to_data_uri(x),
            "adversarial": to_data_uri(x_adv), "perturbation": to_data_uri(amplify(x_adv - x)),
            "label": ctx.classes[int(label)], "prediction": ctx.classes[int(prediction)],
            "confidence": float(confidence), "attack": attack}


def _gallery_has_room(gallery: list[dict], label: str, size: int, n_classes: int) -> bool:
    # at most ceil(size / classes) per class, so the gallery is not all the first class on disk
    return len(gallery) < size and sum(g["label"] == label for g in gallery) < -(-size // n_classes)


def _gallery(candidates: list[dict], size: int, n_classes: int) -> list[dict]:
    """The gallery from every batch's candidates in batch order: the same picks as one pass over all
    batches, since a batch's candidates are its first picks per class under the same caps. The greedy
    keeps min(size, sum over classes of min(cap, seen)) picks, so once one process's own batches fill it,
    the batches of all processes before them do too, and later batches need no candidates."""
    out: list[dict] = []
    for g in candidates:
        if _gallery_has_room(out, g["label"], size, n_classes):
            out.append(g)
    return out


def saved_8bit(x_adv: torch.Tensor) -> torch.Tensor:
    """The example as an 8-bit image file holds it: every pixel rounded to the nearest of 256 levels (which
    can move a pixel by half a level, 0.5/255, past the budget: the file is what a pipeline reads)."""
    return torch.round(x_adv * 255) / 255


def _saved_findings(summary) -> list[Finding]:
    """One note for every budget whose adversarial examples partly stop working once saved as 8-bit images."""
    hit = [r for r in summary["results"] if r["attack"] == "worst_case" and r.get("robust_accuracy_8bit") is not None
           and r["robust_accuracy_8bit"] > r["robust_accuracy"] + 1e-9]
    if not hit:
        return []
    return [Finding("info", "adversarial", "note", "8-bit rounding", "Some adversarial examples stop working once "
                    "saved as 8-bit images", "; ".join(f"{r['norm']} {r['eps_label']}: {100 * r['robust_accuracy']:.1f}% "
                                                      f"as attacked, {100 * r['robust_accuracy_8bit']:.1f}% after rounding"
                                                      for r in hit))]


def budget_findings(summary, grid, clean_accuracy: float, attacked: pd.DataFrame) -> list[Finding]:
    """Per norm, the smallest budget at which worst-case robust accuracy falls below half of clean
    accuracy: a `warn` when that is the smallest budget audited (the model has no margin at all there),
    else `info` (context for the reviewer: most undefended models fall at some budget). Its images: those
    broken at that budget, from the `attacked` rows (right on clean) wrong on their worst-case example."""
    out = []
    for norm, eps_list in grid.items():
        worst = {r["eps"]: r for r in summary["results"] if r["norm"] == norm and r["attack"] == "worst_case"}
        fallen = [e for e in eps_list if worst[e]["robust_accuracy"] < clean_accuracy / 2]
        if not fallen:
            continue
        r = worst[fallen[0]]
        lo, hi = r["robust_accuracy_ci"]
        out.append(Finding(
            "warn" if fallen[0] == eps_list[0] else "info", "adversarial", "robustness_budget", norm,
            f"Under {norm} attacks robust accuracy falls below half of clean at eps {r['eps_label']}",
            f"{100 * r['robust_accuracy']:.1f}% robust vs {100 * clean_accuracy:.1f}% clean",
            effect=clean_accuracy - r["robust_accuracy"], ci=[clean_accuracy - hi, clean_accuracy - lo],
            evidence="#adversarial", members=attacked.loc[(attacked["norm"] == norm) & (attacked["eps"] == fallen[0])
                                                          & ~attacked["correct"].astype(bool), "sample_id"]))
    return out


def near_boundary(sel: pd.DataFrame, result: dict) -> dict:
    """How sure the worst-case number is: the samples still standing after the last attack whose margin is under
    NEAR_MARGIN, and the robust accuracy if a stronger attack broke all of them."""
    near = int((sel["correct"].astype(bool) & (sel["margin"] < NEAR_MARGIN)).sum())
    n = max(int(result["n"]), 1)
    lo, hi = result["robust_accuracy_ci"]
    return {"n_near_boundary": near, "near_boundary_margin": NEAR_MARGIN,
            "robust_accuracy_if_near_broken": result["robust_accuracy"] - near / n,
            "near_boundary_exceeds_ci": bool(near / n > (hi - lo) / 2)}


def near_boundary_findings(summary) -> list[Finding]:
    """A warning for every budget where the near-boundary survivors could move robust accuracy by more than
    half its interval's width: the number is less certain than its interval says."""
    out = []
    for r in summary["results"]:
        if r["attack"] != "worst_case" or not r.get("near_boundary_exceeds_ci"):
            continue
        lo, hi = r["robust_accuracy_ci"]
        out.append(Finding(
            "warn", "adversarial", "near_boundary", f"{r['norm']} {r['eps_label']}",
            f"Robust accuracy at {r['norm']} eps {r['eps_label']} may be optimistic: {r['n_near_boundary']} robust "
            f"samples sit near the decision boundary",
            f"{r['n_near_boundary']} of {r['n']} samples survived every attack with a margin under "
            f"{r['near_boundary_margin']:g} (in units of their clean logits' spread); a stronger attack breaking them "
            f"would take robust accuracy from {100 * r['robust_accuracy']:.1f}% to "
            f"{100 * r['robust_accuracy_if_near_broken']:.1f}%, more than its interval's half-width of "
            f"{100 * (hi - lo) / 2:.1f} points",
            effect=r["robust_accuracy"] - r["robust_accuracy_if_near_broken"], evidence="#adversarial"))
    return out


def summarize_adversarial(rows: pd.DataFrame, grid, classes, attributes) -> dict:
    results, per_class, per_group = [], [], []
    for norm, eps_list in grid.items():
        for eps in eps_list:
            sel = rows[(rows["norm"] == norm) & (rows["eps"] == eps)]
            for attack, col in (("fgsm", "fgsm_correct"), ("worst_case", "correct")):
                if col not in sel:  # no FGSM on a query-only model
                    continue
                acc = aggregate.accuracy(sel.assign(correct=sel[col]))
                results.append({"attack": attack, "norm": norm, "eps": eps, "eps_label": eps_label(norm, eps),
                                "robust_accuracy": acc["accuracy"], "robust_accuracy_ci": acc["accuracy_ci"],
                                "n": acc["n"]})
            found = sel["attack"].value_counts()
            results[-1]["found_by"] = {k: int(v) for k, v in found.items() if k}
            if "correct_8bit" in sel:  # the worst case once its examples are saved as 8-bit images
                saved = aggregate.accuracy(sel.assign(correct=sel["correct_8bit"]))
                results[-1]["robust_accuracy_8bit"] = saved["accuracy"]
            if "margin" in sel:  # robust samples a stronger attack would most likely break
                results[-1].update(near_boundary(sel, results[-1]))
            where = {"norm": norm, "eps": eps}
            per_class.extend({**where, "class": r.pop("label_name"), **r}
                             for r in aggregate.accuracy_by(sel, ["label_name"], prefix="robust_"))
            for attr in aggregate.group_columns(sel, attributes):
                narrow = sel[["correct"]].assign(value=sel[attr].astype(str))
                per_group.extend({"attribute": attr, **r, **where}
                                 for r in aggregate.accuracy_by(narrow, ["value"], prefix="robust_"))
    order = {c: i for i, c in enumerate(classes)}
    per_class.sort(key=lambda r: (r["norm"], r["eps"], order[r["class"]]))
    return {"results": results, "per_class": per_class, "per_group": per_group}
