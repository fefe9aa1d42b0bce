"""Slice discovery without metadata: groups of images, defined by what the model sees, where it fails.

In the spirit of Domino (Eyuboglu et al. 2022, "Domino: discovering systematic errors with cross-modal
embeddings"): an error-aware mixture model over embeddings. Procedure:
  1. Embeddings (model/embeddings.py) standardized and reduced by PCA (whitened, at most 16 components).
  2. The images are split in two seeded halves. On the discovery half, Gaussian mixtures (diagonal
     covariance) are fitted to [embedding, ERROR_WEIGHT x error] for k = 2..K_MAX and the k with the
     lowest BIC is kept (scikit-learn's GaussianMixture and its bic()). The error column pulls
     components toward where the model fails, as Domino's error-aware model does; BIC picks k without a
     hand-set number of slices.
  3. Membership is read from the embedding part of the mixture alone (its marginal: the error column
     dropped), so a held-out image's slice does not depend on whether the model got it right.
  4. Candidates: components whose discovery-half accuracy is at least MIN_GAP below the rest's, with at
     least MIN_MEMBERS discovery images. Each is tested on the other half alone: one-sided Fisher exact
     (is its accuracy below the rest's?), Holm across candidates. Only a held-out confirmation makes a
     slice `confirmed`; the numbers reported are the held-out half's, free of the selection.
Why a mixture rather than k-means: a mixture gives BIC for choosing k and a marginal for assigning
held-out images without their errors.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import fisher_exact
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from ..stats import ALPHA, holm, newcombe_difference_ci, proportion, wilson_ci

ERROR_WEIGHT = 1.5
MAX_COMPONENTS = 16
K_MAX = 8
MIN_GAP = 0.05
MIN_MEMBERS = 5


def reduce(features: np.ndarray, seed: int) -> np.ndarray:
    """Standardized, PCA-whitened features (at most MAX_COMPONENTS dimensions)."""
    f = np.asarray(features, dtype=np.float64)
    f = (f - f.mean(axis=0)) / np.where(f.std(axis=0) > 1e-12, f.std(axis=0), 1.0)
    k = max(1, min(MAX_COMPONENTS, f.shape[1], len(f) - 1))
    return PCA(n_components=k, whiten=True, svd_solver="full", random_state=seed).fit_transform(f)


def _marginal_labels(gmm: GaussianMixture, z: np.ndarray) -> np.ndarray:
    """Most likely component of each row of z under the mixture with its last (error) dimension dropped."""
    d = z.shape[1]
    mean, var = gmm.means_[:, :d], gmm.covariances_[:, :d]
    log_p = (np.log(gmm.weights_)[None, :] - 0.5 * np.log(2 * np.pi * var).sum(axis=1)[None, :]
             - 0.5 * (((z[:, None, :] - mean[None, :, :]) ** 2) / var[None, :, :]).sum(axis=2))
    return log_p.argmax(axis=1)


def discover(features: np.ndarray, correct: np.ndarray, *, seed: int) -> tuple[np.ndarray, list[dict]]:
    """(component per image, candidate slices): each candidate {component, members (indices), n, accuracy,
    accuracy_ci, rest_accuracy, gap, gap_ci, p_value, p_adjusted, confirmed, n_discovery,
    discovery_accuracy}, the n/accuracy/p numbers from the held-out half."""
    correct = np.asarray(correct, dtype=bool)
    n = len(correct)
    labels = np.full(n, -1)
    if n < 4 * MIN_MEMBERS:
        return labels, []
    z = reduce(features, seed)
    order = np.random.default_rng(seed).permutation(n)
    discovery, held_out = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    discovery[order[: n // 2]], held_out[order[n // 2:]] = True, True
    fit_on = np.column_stack([z[discovery], ERROR_WEIGHT * (~correct[discovery])])
    best = None
    for k in range(2, min(K_MAX, int(discovery.sum()) // (2 * MIN_MEMBERS)) + 1):
        gmm = GaussianMixture(k, covariance_type="diag", random_state=seed, n_init=2, reg_covar=1e-3).fit(fit_on)
        bic = gmm.bic(fit_on)
        if best is None or bic < best[0]:
            best = (bic, gmm)
    if best is None:
        return labels, []
    labels = _marginal_labels(best[1], z)
    candidates = []
    for c in range(best[1].n_components):
        member = labels == c
        a, rest_a = member & discovery, ~member & discovery
        if a.sum() < MIN_MEMBERS or not rest_a.sum():
            continue
        if correct[a].mean() > correct[rest_a].mean() - MIN_GAP:
            continue
        b, rest_b = member & held_out, ~member & held_out
        k_b, n_b, k_r, n_r = int(correct[b].sum()), int(b.sum()), int(correct[rest_b].sum()), int(rest_b.sum())
        p = (float(fisher_exact([[k_b, n_b - k_b], [k_r, n_r - k_r]], alternative="less").pvalue)
             if n_b and n_r else 1.0)
        candidates.append({"component": c, "members": np.flatnonzero(member), "n": n_b,
                           "accuracy": proportion(k_b, n_b), "accuracy_ci": wilson_ci(k_b, n_b),
                           "rest_accuracy": proportion(k_r, n_r),
                           "gap": round(k_r / n_r - k_b / n_b, 6) if n_b and n_r else None,
                           "gap_ci": newcombe_difference_ci(k_r, n_r, k_b, n_b) if n_b and n_r else None,
                           "p_value": p, "n_discovery": int(a.sum()),
                           "discovery_accuracy": proportion(int(correct[a].sum()), int(a.sum()))})
    for cand, p in zip(candidates, holm([c["p_value"] for c in candidates])):
        cand["p_adjusted"] = p
        cand["confirmed"] = bool(p < ALPHA and cand["n"] >= MIN_MEMBERS)
    candidates.sort(key=lambda c: (not c["confirmed"], c["accuracy"] if c["accuracy"] is not None else 1.0))
    return labels, candidates


def describe(members: np.ndarray, table, classes: list[str], properties: list[str], attributes: list[str]) -> str:
    """What distinguishes the slice: its most over-represented class, the image properties furthest from
    the average (at least half a standard deviation), and metadata values it concentrates (at least 1.5x
    their overall share and 30% of the slice)."""
    inside = table.iloc[members]
    parts = []
    share = inside["label"].value_counts(normalize=True)
    overall = table["label"].value_counts(normalize=True)
    top = share.index[0]
    if share.iloc[0] >= 0.3 and share.iloc[0] >= 1.5 * overall[top]:
        parts.append(f"class {classes[int(top)]} {100 * share.iloc[0]:.0f}% (overall {100 * overall[top]:.0f}%)")
    for prop in properties:
        col = table[prop].astype(float)
        if col.std() > 0:
            z = (inside[prop].astype(float).mean() - col.mean()) / col.std()
            if abs(z) >= 0.5:
                parts.append(f"{'low' if z < 0 else 'high'} {prop} ({inside[prop].astype(float).mean():.3g} vs "
                             f"{col.mean():.3g})")
    for attr in attributes:
        values = inside[attr].astype(str).value_counts(normalize=True)
        base = table[attr].astype(str).value_counts(normalize=True)
        if len(values):
            v = values.index[0]
            if values.iloc[0] >= 0.3 and values.iloc[0] >= 1.5 * base[v]:
                parts.append(f"{attr} = {v} {100 * values.iloc[0]:.0f}% (overall {100 * base[v]:.0f}%)")
    return "; ".join(parts) or "no single class, property or metadata value stands out"
