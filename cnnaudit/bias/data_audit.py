"""The data audit: most bias starts in the data. Pure functions of the dataset table and property rows.

- class balance and missing metadata;
- representation of each attribute's groups per class, and label-attribute association (Cramér's V
  from scipy's chi-square) with the groups that are nearly all one class flagged as shortcut risks;
- exact duplicates (same decoded pixels) and near duplicates (dHash within 3 bits and 16 x 16 thumbnails
  within 4 grey levels). Candidates are each image's nearest neighbours by thumbnail (scikit-learn's
  NearestNeighbors, CANDIDATES per image), so the search is O(n k) whatever the data: the earlier
  dHash band-collision search compared every pair inside a band, quadratic when thousands of similar
  images (blank frames, one scanner's backgrounds) share one;
- automatic slices by image properties (quartiles of brightness, contrast, sharpness, stored size and
  aspect) where accuracy is significantly lower than elsewhere (Fisher exact vs rest, Holm-adjusted).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency

from .. import aggregate
from ..stats import fisher_vs_rest, holm, p_value
from ..stats import ALPHA

NEAR_BITS = 3
NEAR_THUMB_MAD = 4.0  # mean absolute difference of 16 x 16 thumbnails, in 0-255 grey levels
SLICE_PROPERTIES = ("brightness", "contrast", "sharpness", "width", "height", "aspect")
MAX_LISTED = 20


def class_balance(table: pd.DataFrame, classes: list[str]) -> dict:
    counts = {c: int((table["label"] == i).sum()) for i, c in enumerate(classes)}
    nonzero = [v for v in counts.values() if v]
    return {"counts": counts, "imbalance_ratio": round(max(nonzero) / min(nonzero), 6) if nonzero else None}


def missing_metadata(table: pd.DataFrame, attributes: list[str]) -> dict[str, int]:
    return {a: int((table[a].isna() | (table[a].astype(str).str.strip() == "")).sum()) for a in attributes}


def representation(table: pd.DataFrame, column: str, classes: list[str], min_size: int) -> dict:
    values = table[column].astype(str)
    counts = pd.crosstab(values, table["label"]).reindex(columns=range(len(classes)), fill_value=0)
    out = {"values": [str(v) for v in counts.index], "classes": list(classes), "counts": counts.to_numpy().tolist()}
    if counts.shape[0] > 1 and (counts.sum(axis=0) > 0).sum() > 1:
        nz = counts.loc[:, counts.sum(axis=0) > 0]
        chi2, p, _, _ = chi2_contingency(nz.to_numpy())
        n = nz.to_numpy().sum()
        v = np.sqrt(chi2 / (n * (min(nz.shape) - 1))) if min(nz.shape) > 1 else 0.0
        out.update(cramers_v=round(float(v), 6), p_value=float(p))
    else:
        out.update(cramers_v=None, p_value=None)
    overall = counts.sum(axis=0) / max(1, counts.to_numpy().sum())
    flagged = []
    for value, row in counts.iterrows():
        n = int(row.sum())
        if n < min_size:
            continue
        top = int(row.to_numpy().argmax())
        share = row.iloc[top] / n
        if share >= max(0.5, 3 * overall.iloc[top]):
            flagged.append({"value": str(value), "class": classes[top], "share": round(float(share), 6), "n": n,
                            "class_share_overall": round(float(overall.iloc[top]), 6)})
    out["flagged"] = flagged
    return out


CANDIDATES = 10


def _candidate_pairs(thumbs: np.ndarray) -> set[tuple[int, int]]:
    """(i, j), i < j: each image with its CANDIDATES nearest others by thumbnail (PCA-reduced to 32
    dimensions when larger)."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors
    if len(thumbs) < 2:
        return set()
    x = thumbs.reshape(len(thumbs), -1).astype(np.float32)
    if x.shape[1] > 32 and len(x) > 32:
        x = PCA(n_components=32, svd_solver="full", random_state=0).fit_transform(x)
    _, idx = NearestNeighbors(n_neighbors=min(CANDIDATES + 1, len(x))).fit(x).kneighbors(x)
    return {(min(i, int(j)), max(i, int(j))) for i, row in enumerate(idx) for j in row if j != i}


def duplicates(props: pd.DataFrame, thumbs: np.ndarray) -> dict:
    """props: path, label_name, dhash, pixel_hash; thumbs: (N, 256) uint8 thumbnails in the same order.
    Near duplicates: dHash within 3 bits and thumbnails within 4 grey levels on average."""
    exact = []
    for _, g in props.groupby("pixel_hash", sort=True):
        if len(g) > 1:
            exact.append({"paths": g["path"].tolist(), "labels": sorted(set(g["label_name"])),
                          "conflicting_labels": g["label_name"].nunique() > 1})
    hashes = np.array([int(h, 16) for h in props["dhash"]], dtype=np.uint64)
    pairs = set()
    pix = props["pixel_hash"].to_numpy()
    for i, j in _candidate_pairs(thumbs):
        if (pix[i] != pix[j] and bin(int(hashes[i] ^ hashes[j])).count("1") <= NEAR_BITS
                and np.abs(thumbs[i].astype(int) - thumbs[j].astype(int)).mean() <= NEAR_THUMB_MAD):
            pairs.add((i, j))
    near = [{"paths": [props["path"].iat[i], props["path"].iat[j]],
             "labels": sorted({props["label_name"].iat[i], props["label_name"].iat[j]}),
             "conflicting_labels": props["label_name"].iat[i] != props["label_name"].iat[j],
             "bits": bin(int(hashes[i] ^ hashes[j])).count("1")} for i, j in sorted(pairs)]
    return {"n_exact_groups": len(exact), "n_exact_images": sum(len(e["paths"]) for e in exact),
            "n_near_pairs": len(near), "exact": exact[:MAX_LISTED], "near": near[:MAX_LISTED],
            "n_conflicting": sum(e["conflicting_labels"] for e in exact + near)}


def slices(rows: pd.DataFrame, min_size: int) -> list[dict]:
    """rows: clean rows joined with the properties. Quartile slices per property, judged against the rest.

    Bins are cut on the values, equal values always in the same bin (cutting on ranks split ties by row
    order, which follows the class folders: 399 images 640 wide and one 1024 wide made a "width quartile
    1, 640-640" that was one class). Quartile edges that coincide merge their bins; a property with fewer
    than two bins is skipped."""
    out = []
    k_all, n_all = int(rows["correct"].sum()), len(rows)
    for prop in SLICE_PROPERTIES:
        values = rows[prop].astype(float)
        if values.nunique() < 2:
            continue
        bins = pd.qcut(values, 4, labels=False, duplicates="drop")
        if bins.nunique() < 2:
            continue
        for b in sorted(bins.dropna().unique()):
            g = rows[bins == b]
            lo, hi = float(values[bins == b].min()), float(values[bins == b].max())
            acc = aggregate.accuracy(g)
            out.append({"property": prop, "quartile": int(b) + 1, "low": round(lo, 6), "high": round(hi, 6),
                        "n": acc["n"], "accuracy": acc["accuracy"], "accuracy_ci": acc["accuracy_ci"],
                        "insufficient": acc["n"] < min_size,
                        "rest_accuracy": round((k_all - int(g["correct"].sum())) / max(1, n_all - len(g)), 6),
                        "p_value": fisher_vs_rest(int(g["correct"].sum()), len(g), k_all, n_all),
                        "sample_ids": g["sample_id"].tolist()})
    tested = [s for s in out if not s["insufficient"]]
    for s, p in zip(tested, holm([s["p_value"] for s in tested])):
        s["p_adjusted"] = p_value(p)
        s["flagged"] = p < ALPHA and s["accuracy"] < s["rest_accuracy"]
    for s in out:
        s["p_value"] = p_value(s["p_value"])
        s.setdefault("p_adjusted", None)
        s.setdefault("flagged", False)
    return out
