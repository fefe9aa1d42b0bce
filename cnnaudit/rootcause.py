"""Root causes: findings about the same images, grouped under the finding that explains them.

One failure shows up as several findings: a washed-out scanner is a subgroup gap, a discovered slice, a
low-contrast quartile and the confusions its images make. A reviewer should read it once. Each finding
carries the images it is about (`members`, findings.py); this module groups the findings by them.

Procedure (`group`, a pure function of the ranked findings and the number of audited images):
1. Candidate roots are visited most specific first (`tier`): a recorded group (a metadata value's gap, an
   annotated artifact), then a discovered slice, then an image-property quartile, then a class-level finding
   (weak class, confusion), then a condition (a corruption, shifts, attacks, label flags); within a tier the
   larger image set first (it can contain the others), then rank order.
2. A finding joins the earlier root that explains it best, or becomes a root itself. Root R explains finding
   F when all of:
   - containment |R ∩ F| / |F| >= EXPLAINS: most of F's images are R's. Measured on F, not on the smaller of
     the two sets: a small root covering a corner of a large finding does not explain that finding;
   - lift |R ∩ F| / (|R| |F| / n) >= MIN_LIFT: the shared images are at least twice as common as if the two
     were independent. A set covering most of the audited images (an attack that breaks 80% of them) would
     otherwise "contain" any other finding by sheer size;
   - the one-sided hypergeometric p-value of the overlap (n images, |R| of them in R, |F| drawn) is below
     ALPHA over the number of finding pairs (Bonferroni): the overlap is not chance on a small audit.
   Among roots that explain F, the one with the highest containment (then the higher-ranked one) takes it.
3. A finding joins roots only, never another root's member, so there is no chaining through intermediate
   findings: A near B near C does not put A and C together unless A (or C) explains the other directly.
Findings without images (notes, data representation, check failures) are their own root cause.
"""

from __future__ import annotations

from scipy.stats import hypergeom

from .findings import SEVERITIES
from .stats import ALPHA

EXPLAINS = 0.5  # a majority of a finding's images lie in the root: the root accounts for most of it
MIN_LIFT = 2.0  # the overlap at least twice what independence gives


def tier(f: dict) -> int:
    """How specific a finding is as a cause: 0 a recorded group (a metadata value, an annotated artifact), 1 a
    discovered slice, 2 an image-property quartile, 3 a class or label, 4 a condition (corruption, shift,
    attack, label flags). A discovered slice comes after metadata: slice discovery clusters on the errors
    (bias/slices.py), so one slice can be two independent failures' errors together, and as the larger set it
    would otherwise name them both; after metadata it joins the group holding most of its images."""
    if f["kind"] in ("subgroup_gap", "sensitivity_gap", "shortcut"):
        return 0
    if f["kind"] == "slice":  # a quartile slice names its property; a discovered slice is `discovered:...`
        return 2 if "quartile" in f["subject"] else 1
    if f["kind"] in ("weak_class", "confusion", "weak_label"):
        return 3
    return 4


def overlap(root: set, finding: set, n: int) -> dict:
    """How well `root` explains `finding` among n audited images: shared count, containment (share of the
    finding's images in the root), lift over independence, one-sided hypergeometric p-value."""
    k = len(root & finding)
    expected = len(root) * len(finding) / n if n else 0.0
    return {"shared": k, "containment": k / len(finding) if finding else 0.0,
            "lift": k / expected if expected else 0.0,
            "p": float(hypergeom.sf(k - 1, n, len(root), len(finding))) if k else 1.0}


def explains(o: dict, level: float) -> bool:
    return o["containment"] >= EXPLAINS and o["lift"] >= MIN_LIFT and o["p"] < level


def group(findings: list[dict], n_images: int) -> tuple[list[dict], list[dict]]:
    """(the findings, each with `root_cause` and `n_images` and without `members`; the root causes), from the
    ranked findings and the number of audited images. Deterministic: it depends only on its inputs and their
    order. A root cause: {id (its naming finding's), title, severity (worst of its findings), findings (ids,
    in rank order), n_images (its findings' images together; None when none has images)}."""
    sets = [set(f.get("members") or ()) for f in findings]
    n = max(n_images, len(set().union(*sets)) if sets else 0)  # never fewer than the images the findings name
    with_images = [i for i, s in enumerate(sets) if s]
    pairs = len(with_images) * (len(with_images) - 1) // 2
    level = ALPHA / max(pairs, 1)
    root_of = list(range(len(findings)))
    roots: list[int] = []
    for i in sorted(with_images, key=lambda i: (tier(findings[i]), -len(sets[i]), i)):
        scored = [(overlap(sets[r], sets[i], n), r) for r in roots]
        scored = [(o["containment"], -r, r) for o, r in scored if explains(o, level)]
        if scored:
            root_of[i] = max(scored)[2]
        else:
            roots.append(i)
    out = []
    for f, s, r in zip(findings, sets, root_of):
        g = {k: v for k, v in f.items() if k != "members"}
        g["root_cause"], g["n_images"] = findings[r]["id"], (len(s) if f.get("members") is not None else None)
        out.append(g)
    causes = {}
    for i, r in enumerate(root_of):
        causes.setdefault(r, []).append(i)
    records = []
    for r, idx in causes.items():
        has_images = any(findings[i].get("members") is not None for i in idx)
        c = {"id": findings[r]["id"], "title": findings[r]["title"],
             "severity": min((findings[i]["severity"] for i in idx), key=SEVERITIES.index),
             "findings": [findings[i]["id"] for i in idx],
             "n_images": len(set().union(*(sets[i] for i in idx))) if has_images else None}
        # worst severity first, then the most findings (what reading it settles), then where its first one ranks;
        # not by images: a shift finding's changed predictions outnumber any subgroup's errors without being worse
        records.append(((SEVERITIES.index(c["severity"]), -len(idx), min(idx)), c))
    return out, [c for _, c in sorted(records, key=lambda rc: rc[0])]

