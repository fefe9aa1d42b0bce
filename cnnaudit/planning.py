"""`--budget SECONDS` and `--plan plan.json`: how many images each check gets, chosen from what it costs here
and the precision it buys.

The clean evaluation always covers every image. After it, each selected check runs on a small calibration
subset (the first images of the order below), timed, and its result discarded: 8 images, and 64 more when
those took under a second (two points separate the cost per image from the cost per run, which dominates a
quick check on few images). That gives seconds per image and per run. The checks that declare `Check.plannable` (the per-image ones: attacks,
corruptions, shifts) then get n_i images each so that the audit fits the time left, maximising precision:
a proportion's interval half-width shrinks as 1 / sqrt(n), so minimising sum_i 1 / sqrt(n_i) subject to
sum_i c_i n_i = T gives n_i proportional to c_i^(-2/3) (Lagrange), clipped to what is available and
redistributed. The other checks run on every image and their predicted cost is taken off first.

A budget the audit cannot meet here (the clean evaluation alone used it up, or the smallest plan is predicted
over 4x of it: a calibration on a few images errs by up to about 4x) is refused in one sentence that names
the budget that would do (exit 2), never overrun; between 1x and 4x it runs on the smallest plan and says so.
After each check, the seconds the finished checks took against their prediction rescale the costs of the
checks still to run, and their images are planned again on the time left (`replan`).

The images are a prefix of one seeded, class-stratified order of the readable images (`order`), so the
subsets are nested (a check given fewer images gets a subset of another's: the attacked images are among
the corrupted ones when attacks get fewer) and paired with clean, and a plan (images per check) replays
exactly on any machine: plan.json in OUT, and `--plan plan.json` to run it again.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import AuditError
from .progress import log

SMALL, LARGE = 8, 64  # images a check is timed on before the plan (LARGE only when SMALL took under QUICK s)
QUICK = 1.0
MINIMUM = 30  # fewest images a planned check gets (under it an interval says little); fewer when not available
RESERVE = 0.05  # of the budget, kept for writing the report and the outputs
# a budget whose smallest plan is predicted over 4x of it is refused, not overrun: the prediction from a few
# calibration images errs by up to about 4x (measured against the run: ratios 0.27-0.63 on the digits), and a
# false refusal fails a CI job that would have fit; between 1x and 4x the audit runs on the smallest plan, says
# so, and re-plans on what it measures
TOLERANCE = 4.0
CALIBRATION = 0.15  # of the budget, what the second calibration points may cost in all
PLAN_VERSION = 1
Z = 1.959964


def order(clean_rows: pd.DataFrame, seed: int) -> np.ndarray:
    """The readable sample ids in a seeded order whose every prefix is class-stratified: within each class a
    seeded permutation, and the classes interleaved by the fraction of the class placed so far."""
    rng = np.random.default_rng(seed + 7)
    keys, ids = [], []
    for _, g in clean_rows.groupby("label", sort=True):
        members = rng.permutation(g["sample_id"].to_numpy())
        n = len(members)
        keys.append((np.arange(n) + rng.random(n)) / n)
        ids.append(members)
    if not ids:
        return np.array([], dtype=np.int64)
    keys, ids = np.concatenate(keys), np.concatenate(ids)
    return ids[np.argsort(keys, kind="stable")].astype(np.int64)


def restricted(ctx, ids: np.ndarray):
    """The audit context as a check sees it when the plan gives it `ids`: the clean rows (and so every
    batch it draws, `readable_ids`) of those images only, so its comparisons with clean stay paired."""
    keep = ctx.clean_rows["sample_id"].isin(ids)
    return replace(ctx, clean_rows=ctx.clean_rows[keep].reset_index(drop=True))


def allocate(costs: dict[str, float], seconds: float, available: int, minimum: int = MINIMUM) -> dict[str, int]:
    """Images per planned check: n_i proportional to c_i^(-2/3) with sum c_i n_i = seconds, each clipped to
    [min(minimum, available), available]; what a clipped check leaves is shared among the others."""
    floor = min(minimum, available)
    n, free = {}, dict(costs)
    left = seconds
    while free:
        weight = sum(c ** (1 / 3) for c in free.values())
        share = {k: (left / weight) * c ** (-2 / 3) if weight > 0 and left > 0 else 0.0 for k, c in free.items()}
        clipped = {k: v for k, v in share.items() if v <= floor or v >= available}
        if not clipped:
            n.update({k: int(v) for k, v in share.items()})
            break
        for k, v in clipped.items():
            n[k] = floor if v <= floor else available
            left -= costs[k] * n[k]
            del free[k]
    return {k: max(floor, min(available, v)) for k, v in n.items()}


def half_width(k: int, n: int) -> float | None:
    """The half-width of a proportion's Wilson interval at k of n (what the plan buys)."""
    from .stats import wilson_ci
    ci = wilson_ci(k, n)
    return None if ci is None else round((ci[1] - ci[0]) / 2, 6)


def read_plan(path: str | Path) -> dict:
    try:
        plan = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditError(f"--plan {str(path)!r} does not exist; give the plan.json an earlier --budget run wrote.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AuditError(f"--plan {str(path)!r} is not valid JSON ({exc}).") from None
    images = plan.get("images") if isinstance(plan, dict) else None
    if not isinstance(images, dict) or not all(isinstance(v, int) and v >= 0 for v in images.values()):
        raise AuditError(f"--plan {str(path)!r} has no 'images' table of whole numbers per check; give the plan.json "
                         "an earlier --budget run wrote.")
    return plan


def make_plan(ctx, names: list[str], run_one, started: float, options: dict | None = None) -> dict:
    """The plan for the checks after clean: from --plan, or by calibrating each check here against --budget.
    `run_one(ctx, name)` runs one check and returns its result; `started` is the audit's start
    (time.perf_counter())."""
    from .checks import registry
    config, reg = ctx.config, registry()
    later = [n for n in names if n != "clean"]
    ids = order(ctx.clean_rows, config.seed)
    available = len(ids)
    planned = [n for n in later if reg[n].is_plannable((options or {}).get(n))]
    if config.plan is not None:
        given = read_plan(config.plan)["images"]
        images = {n: min(int(given[n]), available) if n in given else available for n in planned}
        return {"source": "file", "file": str(config.plan), "budget_s": None, "available": available,
                "images": images, "order": ids, "calibration": {}}
    # rank 0's clock decides for every process under torchrun: ranks that decided differently would meet
    # different collectives (one refusing, one calibrating) and hang
    elapsed = ctx.shard.broadcast(time.perf_counter() - started if ctx.shard.is_main else None)
    if config.budget is not None and elapsed >= config.budget * (1 - RESERVE):
        return _infeasible(config, available, elapsed, f"start-up, loading and the clean evaluation of all {available} "
                           f"images (which a budget never cuts) took {elapsed:.0f} s here", elapsed * 1.5)
    costs, overheads, pilots = {}, {}, {}
    spare = None if config.budget is None else CALIBRATION * config.budget / max(len(later), 1)
    for name in later:
        costs[name], overheads[name], pilot, pilot_n = calibrate(ctx, ids, name, run_one, spare,
                                                                 every_image=name not in planned)
        pilots[name] = (proportions(pilot), pilot_n)
    elapsed = time.perf_counter() - started
    fixed = sum(costs[n] * available for n in later if n not in planned)
    if config.precision is not None:  # the smallest sample per check that reaches the half-width
        images = {n: min(available, precision_n(*pilots[n], config.precision)) for n in planned}
    else:
        left = config.budget * (1 - RESERVE) - elapsed - sum(overheads.values())
        images = allocate({n: costs[n] for n in planned}, left - fixed, available) if planned else {}
    predicted = elapsed + sum(overheads.values()) + fixed + sum(costs[n] * images[n] for n in planned)
    if config.precision is not None:
        log(f"--precision {config.precision:g}: " + ", ".join(f"{n} {images[n]} images" for n in planned)
            + f"; about {predicted:.0f} s in all, predicted from the time each check took here on a few images",
            quiet=config.quiet)
    elif predicted > config.budget:
        if predicted > config.budget * TOLERANCE:
            return _infeasible(config, available, elapsed, f"the smallest plan ({min(MINIMUM, available)} images per "
                               f"planned check, every image for "
                               f"{', '.join(n for n in later if n not in planned) or 'none'}) needs about "
                               f"{predicted:.0f} s here, the clean evaluation and the calibration included", predicted)
        log(f"--budget {config.budget:g} s: the smallest plan needs about {predicted:.0f} s here; it runs, and may "
            "go over", quiet=config.quiet)
    return {"source": "precision" if config.precision is not None else "budget", "budget_s": config.budget,
            "precision": config.precision, "available": available, "images": images, "order": ids,
            "calibration": {"seconds_per_image": {n: round(c, 6) for n, c in costs.items()},
                            "seconds_per_run": {n: round(c, 6) for n, c in overheads.items()},
                            "elapsed_before_plan_s": round(elapsed, 3)},
            "predicted_s": round(predicted, 3), "replanned": []}


def _infeasible(config, available: int, elapsed: float, why: str, needs: float) -> dict:
    """A budget this audit cannot meet here: said in one sentence before the work, never overrun silently (the
    pipeline raises it on every process, after rank 0's plan is broadcast)."""
    return {"infeasible": f"--budget {config.budget:g} s cannot be met here: {why}; give --budget "
                          f"{math.ceil(needs / 10) * 10:.0f} or more, audit fewer images (--limit), or leave out "
                          "checks (--checks).", "images": {}, "available": available, "elapsed_s": round(elapsed, 3)}


def cheapest_first(names: list[str], plan: dict) -> list[str]:
    """The checks after clean in order of their predicted seconds, cheapest first, as their `requires` and
    `after` allow. The dearest planned check (the attacks) then runs last of the planned ones: whatever the
    calibration misjudged in the checks before it is measured by then (replan) and the time left is its own,
    rather than the checks after it being cut to their floor or the budget left unspent."""
    from .checks import run_order
    cal = plan["calibration"]
    predicted = {n: cal["seconds_per_run"].get(n, 0.0) + cal["seconds_per_image"].get(n, 0.0)
                 * plan["images"].get(n, plan["available"]) for n in names}
    order = run_order(names, key=lambda n: predicted.get(n, 0.0))
    return [n for n in order if n in names]


def replan(plan: dict, remaining: list[str], done: dict[str, float], started: float, budget: float) -> dict:
    """The plan for the checks still to run, after one ran: a calibration on 8 to 64 images misjudges the cost
    of the whole (the first images of a check pay its warm-up; 0.69-0.73 of the budget was used on the digits
    before this), so the seconds the finished checks took against their prediction rescale the costs of those
    left (the ratio clipped to [1/4, 4]) and the time left is shared again. Sizes stay prefixes of the one
    order, so the subsets stay nested and paired; plan.json records the sizes used. `remaining`: the checks
    still to run; `done`: the seconds of those that ran here (a failed or resumed check measures nothing)."""
    cal = plan["calibration"]
    cost, over = cal["seconds_per_image"], cal["seconds_per_run"]
    available = plan["available"]
    n = lambda k: plan["images"].get(k, available)  # noqa: E731
    predicted = sum(over[k] + cost[k] * n(k) for k in done)
    ratio = min(4.0, max(0.25, sum(done.values()) / predicted)) if predicted > 0 else 1.0
    todo = [k for k in remaining if k in cost]
    planned = [k for k in todo if k in plan["images"]]
    if not planned:
        return plan
    left = budget * (1 - RESERVE) - (time.perf_counter() - started) \
        - ratio * sum(over[k] + (0 if k in planned else cost[k] * available) for k in todo)
    images = allocate({k: cost[k] * ratio for k in planned}, left, available)
    return {**plan, "images": {**plan["images"], **images},
            "replanned": [*plan.get("replanned", []), {"after": list(done)[-1] if done else None,
                                                         "ratio": round(ratio, 4),
                                                         "images": images}]}


def _timed(ctx, ids, name, run_one) -> tuple[float, dict | None]:
    quiet = replace(restricted(ctx, ids), config=replace(ctx.config, quiet=True))  # no progress bars for these
    t = time.perf_counter()
    try:
        section = run_one(quiet, name).summary
    except Exception:  # noqa: BLE001 - it fails again in the audit proper, where it is reported
        section = None
    return time.perf_counter() - t, section


def calibrate(ctx, ids: np.ndarray, name: str, run_one, spare: float | None = None,
              every_image: bool = False) -> tuple[float, float, dict | None, int]:
    """(seconds per image, seconds per run, the section it produced, on how many images) of one check here:
    timed on the first SMALL images, and again on LARGE when that is affordable: when SMALL took under QUICK
    seconds, or when LARGE at SMALL's rate is predicted within `spare` seconds (a share of the budget). The two
    points give the slope and the intercept; one point counts everything per image, which overstates a check
    with a fixed cost (slice discovery, a saliency sanity test) many times when it is extrapolated to every
    image (the subgroup check's 8 images predicted 130 s for the demo's 697 before the second point).
    A check that runs on `every_image` always gets its second point: its slope is multiplied by every image,
    and LARGE images cost it at most LARGE / available of the run it will make anyway."""
    small = ids[:min(SMALL, len(ids))]
    t_small, section = _timed(ctx, small, name, run_one)
    t_small = ctx.shard.broadcast(t_small if ctx.shard.is_main else None)  # every rank times the same points
    rate = max(t_small, 1e-4) / max(len(small), 1)  # an upper bound on the cost per image
    # the second point: LARGE, or as many as `spare` pays for at that rate (at least twice SMALL)
    n_large = LARGE if t_small < QUICK or every_image else min(LARGE, int((spare or 0.0) / rate))
    if n_large < 2 * len(small) or len(ids) <= len(small):
        return rate, 0.0, section, len(small)
    large = ids[:min(n_large, len(ids))]
    t_large, section = _timed(ctx, large, name, run_one)
    t_large = ctx.shard.broadcast(t_large if ctx.shard.is_main else None)
    slope = max((t_large - t_small) / (len(large) - len(small)), 1e-5)
    return slope, max(t_small - slope * len(small), 0.0), section, len(large)


def proportions(section: dict | None) -> list[float]:
    """The proportions a section reports with an interval (`x` beside `x_ci`), top level and `results` rows."""
    if not section or section.get("failed"):
        return []
    rows = section.get("results") if isinstance(section.get("results"), list) else []
    return [float(r[k[:-3]]) for r in [section, *rows] for k in r
            if k.endswith("_ci") and isinstance(r.get(k[:-3]), (int, float)) and not isinstance(r.get(k[:-3]), bool)]


def precision_n(pilot: list[float], pilot_n: int, h: float) -> int:
    """Images for every proportion's 95% interval to be at most ±h: n = z² p(1-p) / h² at the p of the pilot's
    Wilson intervals nearest 1/2 (the most uncertain value the pilot allows; 1/2 without a pilot). The final
    interval is computed on all n images, the pilot's included; tests/test_planning.py checks by simulation
    that this two-stage rule keeps 95% coverage and reaches the half-width."""
    from .stats import wilson_ci
    worst = 0.5
    if pilot and pilot_n:
        nearest = []
        for p in pilot:
            lo, hi = wilson_ci(round(p * pilot_n), pilot_n)
            nearest.append(min(max(0.5, lo), hi))  # the value in [lo, hi] closest to 1/2
        worst = min(nearest, key=lambda v: abs(v - 0.5))
    return max(1, math.ceil(Z * Z * worst * (1 - worst) / (h * h)))


def section(plan: dict, results: dict, timing: dict, total: float) -> dict:
    """summary.json's `plan`: per check, images used of those available, the seconds it took and the
    widest interval half-width of its results."""
    from .checks import registry
    checks = {}
    for name, n in plan["images"].items():
        result = results.get(name)
        checks[name] = {"images": int(n), "available": int(plan["available"]),
                        "seconds_per_image": plan["calibration"].get("seconds_per_image", {}).get(name),
                        "seconds": round(float(timing.get(name, 0.0)), 3),
                        "half_width": registry()[name].half_width(result.summary) if result is not None else None}
    return {"source": plan["source"], "budget_s": plan["budget_s"], "precision": plan.get("precision"),
            "file": plan.get("file"),
            "available": int(plan["available"]), "calibration": plan["calibration"],
            "predicted_s": plan.get("predicted_s"), "total_s": round(total, 3), "checks": checks,
            **({"replanned": plan["replanned"]} if plan.get("replanned") else {})}


def plan_file(plan_section: dict, seed: int) -> dict:
    """plan.json: what `--plan` needs to replay the plan exactly (images per check; the order is the seed's)."""
    return {"version": PLAN_VERSION, "seed": seed,
            "images": {k: v["images"] for k, v in plan_section["checks"].items()},
            "budget_s": plan_section["budget_s"]}


def widest_half_width(section: dict) -> float | None:
    """The widest half-width among the intervals (`*_ci` pairs) of a section's `results` rows and top level."""
    widths = []
    rows = section.get("results") if isinstance(section.get("results"), list) else []
    for r in [section, *rows]:
        for k, v in r.items():
            if k.endswith("_ci") and isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
                widths.append((v[1] - v[0]) / 2)
    return round(max(widths), 6) if widths else None

