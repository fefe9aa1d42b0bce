"""The training-set audit's pure functions: leakage between the splits, representation of metadata groups,
and out-of-distribution distances. Nothing here is quadratic in the number of images.

Leakage: exact copies share a hash of their decoded pixels (a dict lookup). Near copies, robust to
re-encoding and small shifts, are found in three steps, none quadratic:
1. candidates: each evaluation image's nearest training images by 8 x 8 thumbnails (PCA-reduced,
   scikit-learn's NearestNeighbors: a tree or blocked brute force, never all pairs held at once), queried
   once per shift the verification absorbs (the 32 x 32 thumbnail moved by 0 or +-SHIFT pixels each way,
   then reduced to 8 x 8): a one-pixel shift of a 16 px image moves its 8 x 8 thumbnail by half a cell,
   which in a dense set of look-alikes (handwritten digits) pushes the true copy out of the 10 nearest.
   Shifted queries widen the search exactly where the unshifted one is blind, at 9 kNN queries per image;
2. verification: the smallest mean absolute difference of 32 x 32 thumbnails, standardized per image,
   over integer shifts of up to SHIFT pixels, refined by half-pixel shifts for the best REFINE candidates
   (a one-pixel shift of a 64 px image is half a pixel of its thumbnail, which no integer shift absorbs and
   which alone costs ~0.1: as much as a different digit);
3. the threshold, calibrated on the data: a copy is an outlier far below the distances at which images
   of the same split sit from their nearest other image. The same search is run from a seeded sample of
   training images to the rest of training (each one's nearest *distinct* image: neighbours under
   FLOOR are its own near-duplicates and are passed over); the threshold is CALIBRATION_FRACTION x the
   CALIBRATION_QUANTILE quantile of those distances, clipped to [FLOOR, NEAR]. A fixed NEAR does not
   adapt to how alike a dataset's images are: on dense real digits it flagged 29% of the evaluation set
   (same-class look-alikes at 0.04-0.10). Passing over near-duplicates and the floor keep a training
   set full of its own copies from dragging the threshold to zero (it went blind to every re-encoded
   copy in bench_training.py's synthetic set, 55 shifted repeats of each digit).
Why thumbnails and not dHash bands: a one-pixel shift of a small image flips many dHash bits, while a
shift search on thumbnails absorbs it, and the candidate search costs the same for any number of
near-identical images (the band-collision search degrades towards quadratic when thousands share a band).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from ..aggregate import group_values
from ..stats import fisher_pair, proportion, wilson_ci

SHIFT = 2  # pixels of the 32 x 32 thumbnail searched for a shifted copy
# Distances are mean absolute differences of thumbnails standardized per image (z-scores), so that a
# low-contrast image is not close to every other low-contrast one. NEAR bounds the calibrated threshold:
# a JPEG re-encode with a one-pixel shift measures 0.02-0.05, the nearest different digit 0.07 and more
# (bench_training.py prints both distributions and what the calibration chose).
NEAR = 0.1
CANDIDATES = 6  # nearest training images per shifted query (the union of 9 queries is verified)
QUERY_SHIFTS = tuple((dy, dx) for dy in (-SHIFT, 0, SHIFT) for dx in (-SHIFT, 0, SHIFT))
REFINE = 3  # candidates per image whose distance is refined by half-pixel shifts
CALIBRATION_SAMPLE = 2000  # training images whose nearest other training image calibrates the threshold
CALIBRATION_QUANTILE = 0.1
CALIBRATION_FRACTION = 0.5
# A pair this close is a copy whatever the calibration says, and a training image's neighbour this close is
# its own near-duplicate, not look-alike spacing: left out of the reference, so a training set full of
# duplicates (augmented copies saved to disk, burst frames) cannot drag the threshold to zero. Re-encoded
# and shifted copies measure 0.004-0.058, the nearest distinct digit 0.066 and more.
FLOOR = 0.03
MIN_REFERENCE = 20  # nearest-neighbour distances the calibration needs; with fewer the threshold is NEAR
PCA_DIMS = 32
PCA_FIT_MAX = 20_000  # training images the PCA is fitted on (a seeded sample beyond that)
UNDER_REPRESENTED = 0.5  # a value whose training share is under half its evaluation share


# The verification's array work runs in torch, not numpy: the strided window differences below are ~4x
# faster there on a CPU (vectorized and threaded), and torch is already the audit's dependency.

def _zt(a: np.ndarray) -> torch.Tensor:
    """Thumbnails standardized per image, as a float32 tensor; a flat image (std under one grey level)
    stays flat."""
    t = torch.from_numpy(np.ascontiguousarray(a)).float()
    mean, std = t.mean(dim=(-2, -1), keepdim=True), t.std(dim=(-2, -1), unbiased=False, keepdim=True)
    return (t - mean) / std.clamp_min(1.0)


def _window_mad(a: torch.Tensor, bs: torch.Tensor, dy: int, dx: int, shift: int) -> torch.Tensor:
    """Mean absolute difference of the central window of a (..., h, w) (a `shift`-pixel border left out) and
    the same-sized window of each of bs (..., k, h, w) moved by (dy, dx): always inside bs, so every shift
    compares the same number of pixels and the whole batch is one array operation."""
    h, w = a.shape[-2:]
    return (a[..., None, shift:h - shift, shift:w - shift]
            - bs[..., shift + dy:h - shift + dy, shift + dx:w - shift + dx]).abs_().mean(dim=(-2, -1))


def _quarter_shift(z: torch.Tensor, ty: float, tx: float) -> torch.Tensor:
    """z (..., h, w) moved by ty, tx in {-0.25, 0, 0.25} pixels, by linear interpolation (edges repeated)."""
    for axis, t in ((-2, ty), (-1, tx)):
        if t:
            n = z.shape[axis]
            idx = (torch.arange(n) - int(np.sign(t))).clamp(0, n - 1)
            z = (1 - abs(t)) * z + abs(t) * z.index_select(axis % z.ndim, idx)
    return z


HALF_PIXEL = tuple((fy, fx) for fy in (-0.5, 0.0, 0.5) for fx in (-0.5, 0.0, 0.5) if fy or fx)


def verify(a: np.ndarray, bs: np.ndarray, shift: int = SHIFT, refine: int = 0,
           skip: np.ndarray | None = None, at_least: float = 0.0) -> np.ndarray:
    """Distances of queries a (n, h, w) to their candidates bs (n, k, h, w), all greyscale thumbnails: the
    smallest mean absolute difference of the two standardized, over integer shifts of up to `shift` pixels.
    With refine, each query's `refine` closest candidates are also tried at half-pixel offsets around
    their best integer shift (a moved a quarter pixel one way, the candidate a quarter the other, so both
    are smoothed alike). Candidates marked in `skip` (n, k), and with `at_least`, those closer than it at
    an integer shift, are left at infinity. (n, k) float32."""
    a, bs = _zt(a), _zt(bs)
    n, k = bs.shape[:2]
    best = torch.full((n, k), float("inf"))
    arg = torch.zeros((n, k, 2), dtype=torch.long)
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            d = _window_mad(a, bs, dy, dx, shift)
            better = d < best
            best = torch.where(better, d, best)
            arg[better] = torch.tensor([dy, dx])
    if skip is not None:
        best[torch.from_numpy(np.asarray(skip, dtype=bool))] = float("inf")
    if at_least:
        best[best < at_least] = float("inf")
    r = min(refine, k)
    if not r or not n:
        return best.numpy()
    h, w = a.shape[-2:]
    top = torch.argsort(best, dim=1, stable=True)[:, :r]  # (n, r)
    qi = torch.arange(n)[:, None]
    sub, off = bs[qi, top], arg[qi, top]  # (n, r, h, w), (n, r, 2)
    ys = shift + off[..., 0, None] + torch.arange(h - 2 * shift)  # (n, r, h') rows of each candidate's window
    xs = shift + off[..., 1, None] + torch.arange(w - 2 * shift)
    ni, ri = torch.arange(n)[:, None, None, None], torch.arange(r)[None, :, None, None]
    refined = best[qi, top]
    live = torch.isfinite(refined)
    for fy, fx in HALF_PIXEL:
        qa = _quarter_shift(a, fy / 2, fx / 2)[:, None, shift:h - shift, shift:w - shift]
        qb = _quarter_shift(sub, -fy / 2, -fx / 2)[ni, ri, ys[..., :, None], xs[..., None, :]]
        refined = torch.minimum(refined, (qa - qb).abs_().mean(dim=(-2, -1)))
    best[qi, top] = torch.where(live, refined, torch.tensor(float("inf")))
    if at_least:  # and those the refinement brought under it
        best[best < at_least] = float("inf")
    return best.numpy()


def shifted_mad(a: np.ndarray, b: np.ndarray, shift: int = SHIFT) -> float:
    """The near-copy distance of two (h, w) thumbnails."""
    return float(verify(a[None], b[None, None], shift, refine=1)[0, 0])


def _small(big: np.ndarray, dy: int = 0, dx: int = 0) -> np.ndarray:
    """(N, 64) 8 x 8 thumbnails (4 x 4 block means) of 32 x 32 thumbnails moved by (dy, dx), edges repeated."""
    n, h, w = big.shape
    if dy or dx:
        pad = np.pad(big, ((0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT)), mode="edge")
        big = pad[:, SHIFT - dy:SHIFT - dy + h, SHIFT - dx:SHIFT - dx + w]
    return big.reshape(n, 8, h // 8, 8, w // 8).astype(np.float32).mean(axis=(2, 4)).reshape(n, 64)


def _pca(train: np.ndarray, seed: int) -> PCA:
    k = min(PCA_DIMS, train.shape[1], max(1, len(train) - 1))
    fit = train if len(train) <= PCA_FIT_MAX else train[np.random.default_rng(seed).choice(len(train), PCA_FIT_MAX,
                                                                                         replace=False)]
    return PCA(n_components=k, svd_solver="randomized" if min(fit.shape) > 2 * k else "full", random_state=seed).fit(fit)


def _reduced(train: np.ndarray, query: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = train.reshape(len(train), -1).astype(np.float32)
    q = query.reshape(len(query), -1).astype(np.float32)
    pca = _pca(x, seed)
    return pca.transform(x), pca.transform(q)


BLOCK = 64  # queries verified together (their candidates' thumbnails are gathered per block)


class _Search:
    """The candidate search and verification of one training set, for any queries (see the module docstring)."""

    def __init__(self, train_big: np.ndarray, seed: int):
        self.big = train_big
        small = _small(train_big)
        self.pca = _pca(small, seed)
        self.index = NearestNeighbors(n_neighbors=min(CANDIDATES + 1, len(train_big))).fit(self.pca.transform(small))

    def nearest(self, query_big: np.ndarray, exclude: np.ndarray | None = None,
                at_least: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(training index, distance) of each query's closest verified candidate (-1, inf for none);
        `exclude[i]` is a training index query i may not match (itself, when calibrating), and candidates
        closer than `at_least` are passed over (a training image's own near-duplicates)."""
        n = len(query_big)
        k = min(CANDIDATES + (exclude is not None), len(self.big))
        cands = np.concatenate([self.index.kneighbors(self.pca.transform(_small(query_big, dy, dx)),
                                                      n_neighbors=k)[1] for dy, dx in QUERY_SHIFTS], axis=1)
        cands.sort(axis=1)
        drop = np.zeros(cands.shape, dtype=bool)
        drop[:, 1:] = cands[:, 1:] == cands[:, :-1]  # the shifted queries overlap: each candidate once
        if exclude is not None:
            drop |= cands == exclude[:, None]
        idx = np.full(n, -1, dtype=np.int64)
        dist = np.full(n, np.inf, dtype=np.float64)
        for lo in range(0, n, BLOCK):
            c, dr = cands[lo:lo + BLOCK], drop[lo:lo + BLOCK]
            keep = np.argsort(dr, axis=1, kind="stable")[:, :max(1, int((~dr).sum(axis=1).max()))]
            rows = np.arange(len(c))[:, None]
            c, dr = c[rows, keep], dr[rows, keep]  # distinct candidates first, padded with skipped ones
            d = verify(query_big[lo:lo + BLOCK], self.big[c], refine=REFINE, skip=dr, at_least=at_least)
            b = d.argmin(axis=1)
            best = d[np.arange(len(c)), b]
            idx[lo:lo + BLOCK] = np.where(np.isfinite(best), c[np.arange(len(c)), b], -1)
            dist[lo:lo + BLOCK] = best
        return idx, dist


def calibrate(search: _Search, *, seed: int) -> dict:
    """The near-copy threshold from the training set's own nearest-neighbour distances (module docstring):
    FRACTION x the QUANTILE quantile of each sampled training image's nearest other training image at
    FLOOR or more, clipped to [FLOOR, NEAR]; NEAR when fewer than MIN_REFERENCE such neighbours exist."""
    n = len(search.big)
    sample = (np.sort(np.random.default_rng(seed).choice(n, min(CALIBRATION_SAMPLE, n), replace=False)) if n > 1
              else np.zeros(0, dtype=np.int64))
    d = search.nearest(search.big[sample], exclude=sample, at_least=FLOOR)[1] if len(sample) else np.zeros(0)
    d = d[np.isfinite(d)]
    calibrated = len(d) >= MIN_REFERENCE
    reference = float(np.quantile(d, CALIBRATION_QUANTILE)) if calibrated else None
    threshold = min(NEAR, max(FLOOR, CALIBRATION_FRACTION * reference)) if calibrated else NEAR
    return {"threshold": round(threshold, 6), "calibrated": calibrated, "bound": NEAR, "floor": FLOOR,
            "reference_distance": None if reference is None else round(reference, 6),
            "reference_quantile": CALIBRATION_QUANTILE, "fraction": CALIBRATION_FRACTION,
            "n_reference": int(len(d)), "n_sampled": int(len(sample))}


def near_copies(train_big: np.ndarray, eval_big: np.ndarray, *, seed: int) -> tuple[list[tuple[int, int, float]], dict]:
    """([(eval index, train index, distance)] for every evaluation image whose closest verified candidate is
    within the calibrated threshold, the calibration): big are (N, 32, 32) greyscale thumbnails."""
    if not len(train_big):
        return [], {"threshold": NEAR, "calibrated": False, "bound": NEAR, "floor": FLOOR,
                    "reference_distance": None, "reference_quantile": CALIBRATION_QUANTILE,
                    "fraction": CALIBRATION_FRACTION, "n_reference": 0, "n_sampled": 0}
    search = _Search(train_big, seed)
    calibration = calibrate(search, seed=seed)  # also when every evaluation image was an exact copy
    if not len(eval_big):
        return [], calibration
    idx, dist = search.nearest(eval_big)
    limit = calibration["threshold"]
    out = [(i, int(idx[i]), round(float(dist[i]), 4)) for i in range(len(eval_big)) if dist[i] <= limit]
    return out, calibration


def representation(train: pd.DataFrame, evaluated: pd.DataFrame, attribute: str, min_size: int) -> list[dict]:
    """Per value of `attribute`: training count and share, evaluation count and share, evaluation accuracy
    (Wilson interval) and the rest's, and whether the value is under-represented in training (share under
    UNDER_REPRESENTED x its evaluation share, with at least `min_size` evaluation images) with a Fisher
    test of its accuracy against the rest's."""
    # a blank cell is in no group (and in no group's rest), as in the subgroups check; shares are of all images
    tv, ev = group_values(train[attribute]), group_values(evaluated[attribute])
    out = []
    for value in sorted(set(tv.dropna()) | set(ev.dropna())):
        t_n, e = int((tv == value).sum()), evaluated[ev == value]
        rest = evaluated[ev.notna() & (ev != value)]
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
