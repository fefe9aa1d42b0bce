"""Deprecated summary.json keys, in one place. CI jobs read summaries, so a key that changes stays one
release beside its successor (README, "Versions of summary.json"): `add_deprecated` writes those keys into
a new summary, and `upgrade` reads a summary written by an earlier release as the current shape. Nothing
else in cnnaudit reads or writes a deprecated key: checks, the gate, diff and the report see current keys
only.

Deprecated keys written (and what replaced them):
- `model.outputs_probabilities` (0.1): `model.output_kind` (0.2.0);
- `adversarial.gradient_masking_suspected` (0.2): `adversarial.gradient_masking`, a verdict (0.3.0);
- `finding_sentences` (0.3): `findings`, ranked records (0.4.0).
"""

from __future__ import annotations

import copy

PROBABILITY_KINDS = ("probabilities", "single_probability")  # output kinds the deprecated boolean called true


def add_deprecated(summary: dict) -> dict:
    """A new summary with its deprecated keys added (in place; returned for convenience), each right after
    the key that replaced it, where earlier releases wrote it."""
    from .findings import sentence
    model = summary.get("model")
    if isinstance(model, dict) and "output_kind" in model:
        _put_after(model, "input_shape", "outputs_probabilities", model["output_kind"] in PROBABILITY_KINDS)
    adv = summary.get("adversarial")
    if isinstance(adv, dict) and "gradient_masking" in adv:
        # true unless the number is known to be honest (a query-only upper bound is not: "not_applicable")
        _put_after(adv, "gradient_masking", "gradient_masking_suspected", adv["gradient_masking"] != "none")
    if isinstance(summary.get("findings"), list):
        _put_after(summary, "findings", "finding_sentences",
                   [sentence(f) for f in summary["findings"] if isinstance(f, dict)])
    return summary


def _put_after(d: dict, anchor: str, key: str, value) -> None:
    """d[key] = value, placed right after `anchor` (at the end without it); d stays the same object."""
    items = [(k, v) for k, v in d.items() if k != key]
    at = next((i + 1 for i, (k, _) in enumerate(items) if k == anchor), len(items))
    items.insert(at, (key, value))
    d.clear()
    d.update(items)


def upgrade(summary: dict) -> dict:
    """A copy of `summary` in the current shape, whichever release wrote it: keys added since are filled
    from the deprecated ones they replaced. A summary that is already current comes back equal."""
    s = copy.deepcopy(summary)
    model = s.get("model")
    if isinstance(model, dict) and "output_kind" not in model and "outputs_probabilities" in model:
        # before 0.2.0 a model gave logits or probabilities over its classes
        model["output_kind"] = "probabilities" if model["outputs_probabilities"] else "logits"
    adv = s.get("adversarial")
    if isinstance(adv, dict) and not adv.get("failed") and "gradient_masking" not in adv:
        # before 0.3.0 there was only the boolean
        adv["gradient_masking"] = "suspected" if adv.get("gradient_masking_suspected") else "none"
    findings = s.get("findings")
    if isinstance(findings, list) and any(not isinstance(f, dict) for f in findings):
        # before 0.4.0 findings were sentences: kept as the sentences they were, with no records to match
        s.setdefault("finding_sentences", [f for f in findings if isinstance(f, str)])
        s["findings"] = [f for f in findings if isinstance(f, dict)]
    if isinstance(s.get("findings"), list) and any("id" not in f for f in s["findings"]):
        # before 0.9.0 findings had no id: the same one a current audit would give them (a discovered slice,
        # whose id comes from its description, keeps its "slice N" subject)
        from .findings import unique_ids
        s["findings"] = unique_ids([{**f} for f in s["findings"]])
    if isinstance(s.get("findings"), list) and "root_causes" not in s:
        # before 0.9.0 findings were not grouped, and their images were not kept: each is its own root cause
        from .rootcause import group
        s["findings"], s["root_causes"] = group(s["findings"], 0)
    return s
