"""The training-set audit's pure functions: leakage between the splits, representation of metadata groups,
and out-of-distribution distances. Nothing here is quadratic in the number of images.

Leakage: exact copies share a hash of their decoded pixels (a dict lookup). Near copies, robust to
re-encoding and small shifts, are found in two steps: candidates are each evaluation image's nearest
training images by 8 x 8 thumbnails (coarse enough that a small shift barely moves them; PCA-reduced,
scikit-learn's NearestNeighbors: a tree or blocked brute force, never all pairs held at once), then each
candidate pair is verified on 32 x 32 thumbnails, standardized per image, by the smallest mean absolute
difference over shifts of up to SHIFT pixels. Why thumbnails and not dHash
bands: a one-pixel shift of a small image flips many dHash bits, while a shift search on thumbnails
absorbs it, and the candidate search costs the same for any number of near-identical images (the
band-collision search degrades towards quadratic when thousands share a band).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from ..stats import fisher_pair, proportion, wilson_ci

SHIFT = 2  # pixels of the 32 x 32 thumbnail searched for a shifted copy
# Distances are mean absolute differences of thumbnails standardized per image (z-scores), so that a
# low-contrast image is not close to every other low-contrast one. A JPEG re-encode with a one-pixel shift
# stays far under NEAR, the nearest different digit far over it, washed-out or not (bench_training.py
# prints both distributions).
NEAR = 0.1
CANDIDATES = 10
PCA_DIMS = 32
PCA_FIT_MAX = 20_000  # training images the PCA is fitted on (a seeded sample beyond that)
UNDER_REPRESENTED = 0.5  # a value whose training share is under half its evaluation share


def _zs(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    mean, std = a.mean(axis=(-2, -1), keepdims=True), a.std(axis=(-2, -1), keepdims=True)
    return (a - mean) / np.maximum(std, 1.0)  # a flat image (std under one grey level) stays flat


def shifted_distances(a: np.ndarray, bs: np.ndarray, shift: int = SHIFT) -> np.ndarray:
    """For one (32, 32) thumbnail a and candidates bs (k, 32, 32): each candidate's smallest mean absolute
    difference from a, both standardized, over integer shifts of up to `shift` pixels (on the overlap).
    Vectorized over the candidates: one array operation per shift."""
    a, bs = _zs(a), _zs(bs)
    h, w = a.shape
    best = np.full(len(bs), np.inf, dtype=np.float32)
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            ya, yb = max(0, dy), max(0, -dy)
            xa, xb = max(0, dx), max(0, -dx)
            d = np.abs(a[ya:h - yb, xa:w - xb][None] - bs[:, yb:h - ya, xb:w - xa]).mean(axis=(1, 2))
            best = np.minimum(best, d)
    return best


def shifted_mad(a: np.ndarray, b: np.ndarray, shift: int = SHIFT) -> float:
    return float(shifted_distances(a, b[None], shift)[0])


def _reduced(train: np.ndarray, query: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = train.reshape(len(train), -1).astype(np.float32)
    q = query.reshape(len(query), -1).astype(np.float32)
    k = min(PCA_DIMS, x.shape[1], max(1, len(x) - 1))
    fit = x if len(x) <= PCA_FIT_MAX else x[np.random.default_rng(seed).choice(len(x), PCA_FIT_MAX, replace=False)]
    pca = PCA(n_components=k, svd_solver="randomized" if min(fit.shape) > 2 * k else "full", random_state=seed).fit(fit)
    return pca.transform(x), pca.transform(q)


def near_copies(train_small: np.ndarray, eval_small: np.ndarray, train_big: np.ndarray, eval_big: np.ndarray,
                *, seed: int) -> list[tuple[int, int, float]]:
    """(eval index, train index, distance) for every evaluation image with a near copy in training: its
    closest verified candidate. small: (N, 8, 8) thumbnails for the search; big: (N, 32, 32) to verify."""
    if not len(train_small) or not len(eval_small):
        return []
    t, q = _reduced(train_small, eval_small, seed)
    k = min(CANDIDATES, len(t))
    _, idx = NearestNeighbors(n_neighbors=k).fit(t).kneighbors(q)
    out = []
    for i, cands in enumerate(idx):
        d = shifted_distances(eval_big[i], train_big[cands])
        b = int(d.argmin())
        if d[b] <= NEAR:
            out.append((i, int(cands[b]), round(float(d[b]), 4)))
    return out


def representation(train: pd.DataFrame, evaluated: pd.DataFrame, attribute: str, min_size: int) -> list[dict]:
    """Per value of `attribute`: training count and share, evaluation count and share, evaluation accuracy
    (Wilson interval) and the rest's, and whether the value is under-represented in training (share under
    UNDER_REPRESENTED x its evaluation share, with at least `min_size` evaluation images) with a Fisher
    test of its accuracy against the rest's."""
    tv, ev = train[attribute].astype(str), evaluated[attribute].astype(str)
    out = []
    for value in sorted(set(tv) | set(ev)):
        t_n, e = int((tv == value).sum()), evaluated[ev == value]
        rest = evaluated[ev != value]
        k, n = int(e["correct"].sum()), len(e)
        rk, rn = int(rest["correct"].sum()), len(rest)
        train_share, eval_share = t_n / max(1, len(tv)), n / max(1, len(ev))
        under = bool(n >= min_size and train_share < UNDER_REPRESENTED * eval_share)
        out.append({"value": value, "train_n": t_n, "train_share": round(train_share, 6), "eval_n": n,
                    "eval_share": round(eval_share, 6), "eval_accuracy": proportion(k, n),
                    "eval_accuracy_ci": wilson_ci(k, n), "rest_accuracy": proportion(rk, rn),
                    "p_value": fisher_pair(k, n, rk, rn) if n and rn else None, "under_represented": under})
    return out


def class_balance(train_labels: np.ndarray, eval_labels: np.ndarray, classes: list[str]) -> list[dict]:
    return [{"class": c, "train_n": int((train_labels == i).sum()),
             "train_share": round(float((train_labels == i).mean()), 6) if len(train_labels) else 0.0,
             "eval_n": int((eval_labels == i).sum()),
             "eval_share": round(float((eval_labels == i).mean()), 6) if len(eval_labels) else 0.0}
            for i, c in enumerate(classes)]


def ood_distances(train_emb: np.ndarray, eval_emb: np.ndarray, *, seed: int, k: int = 5,
                  reference: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """(evaluation distances, training reference distances): the mean distance to the k nearest training
    images in a standardized, PCA-reduced embedding space; the reference is the same for a seeded sample
    of training images with themselves left out."""
    mu, sd = train_emb.mean(axis=0), train_emb.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    t, q = _reduced((train_emb - mu) / sd, (eval_emb - mu) / sd, seed)
    k = min(k, len(t) - 1)
    index = NearestNeighbors(n_neighbors=k + 1).fit(t)
    eval_d = index.kneighbors(q, n_neighbors=k)[0].mean(axis=1)
    ref = np.random.default_rng(seed).choice(len(t), min(reference, len(t)), replace=False)
    ref_d = index.kneighbors(t[ref], n_neighbors=k + 1)[0][:, 1:].mean(axis=1)  # the first is the image itself
    return eval_d, ref_d
