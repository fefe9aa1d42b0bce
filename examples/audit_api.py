"""cnnaudit from Python: audit a model, read the numbers, judge a policy.

    python examples/audit_api.py MODEL DATA [--policy examples/gate.toml] [--limit 200]
"""

from __future__ import annotations

import argparse

import cnnaudit
from cnnaudit.gate import judge, load_policy


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--policy")
    p.add_argument("--limit", type=int)
    p.add_argument("--out", default="cnnaudit-api-out")
    args = p.parse_args()

    result = cnnaudit.audit(args.model, args.data, limit=args.limit,
                            checks=["adversarial", "corruption", "subgroups"],
                            adversarial={"norms": ("linf",)}, corruption={"corruptions": ("low_light", "snow")})
    s = result.summary
    print(f"clean accuracy {s['clean']['accuracy']:.3f} {s['clean']['accuracy_ci']}")
    for r in s["adversarial"]["results"]:
        if r["attack"] == "worst_case":
            print(f"robust accuracy {r['norm']} {r['eps_label']}: {r['robust_accuracy']:.3f}")
    for name, acc in s["corruption"]["mean"].items():
        print(f"{name}: {acc:.3f} (drop {s['corruption']['relative_drop'][name]:.1%})")
    rows = result.samples  # one tidy table: every check's per-sample rows
    print(rows.groupby("check").size().to_string())
    code = 0
    if args.policy:
        gate = judge(load_policy(args.policy), s)
        s["gate"] = gate
        print("gate", "passed" if gate["passed"] else "FAILED")
        code = 0 if gate["passed"] else 1
    result.write(args.out)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
