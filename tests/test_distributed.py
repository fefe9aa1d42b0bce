"""torchrun: an audit sharded over 2 CPU processes (gloo) writes one report whose summary.json equals the
single-process run's, and a failed gate still fails the launch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import read_summary, run_cli

pytestmark = pytest.mark.slow  # torchrun with two processes: `-m "not slow"` skips it

# 150 images in batches of 16: 10 batches, the last one short, split 5/5 between the ranks (the attacks
# take 4 batches a call: 3 calls over the ~140 correct images, 2 on rank 0 and 1 on rank 1); every check,
# the annotated ruler and both norms, so each sharded loop (clean, attacks, corruptions, properties,
# removal, pasting, occlusion scan) runs in both processes
ARGS = ["--limit", "150", "--batch-size", "16", "--eps-linf", "0.05,0.1", "--eps-l2", "1", "--artifact", "ruler",
        "--corruptions", "rain,low_light,jpeg", "--severities", "1,3,5", "--quiet"]


def torchrun(*args, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cnnaudit", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def strip(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "timing"}


def test_two_processes_match_one(tmp_path, torchscript_path, digits_dir, plugin_env):
    """The contract's "two processes equal one", for every registered check at once: the example plugin
    is installed, so it runs (and is sharded) too."""
    from cnnaudit.checks import registry
    one, one_thread, two = tmp_path / "one", tmp_path / "one_thread", tmp_path / "two"
    train = ["--train-data", digits_dir]  # so that the training check runs (and is sharded) too
    r = run_cli("run", torchscript_path, digits_dir, "--out", one, *ARGS, *train, env=plugin_env)
    assert r.returncode == 0, r.stderr
    r = torchrun("run", torchscript_path, digits_dir, "--out", two, *ARGS, *train, env=plugin_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("report:") == 1  # rank 0 alone writes and prints
    single, sharded = read_summary(one), read_summary(two)
    assert sharded["timing"]["processes"] == 2 and single["timing"]["processes"] == 1
    # every check ran, but the one that needs multi-label data
    assert {*(n for n, c in registry().items() if "multilabel" not in c.inputs), "example_plugin"} <= set(single)
    for section in single:
        if section != "timing":
            assert sharded[section] == single[section], section
    assert single["shortcuts"]["artifacts"]["ruler"]["n_with"] > 0
    assert single["adversarial"]["results"][0]["n"] == 150
    # row for row, byte for byte, against one process with the same intra-op threads as each rank
    # (torchrun gives each 1): a different thread count moves adversarial confidences at float32 rounding
    r = run_cli("run", torchscript_path, digits_dir, "--out", one_thread, *ARGS, *train,
                env={"OMP_NUM_THREADS": "1", **plugin_env})
    assert r.returncode == 0, r.stderr
    assert (two / "samples.csv").read_text() == (one_thread / "samples.csv").read_text()
    assert strip(read_summary(one_thread)) == strip(single)


def test_failed_gate_fails_the_launch(tmp_path, torchscript_path, digits_dir):
    policy = tmp_path / "gate.toml"
    policy.write_text('[[rule]]\nname = "impossible accuracy"\nkind = "min_clean_accuracy"\nthreshold = 1.0\n')
    r = torchrun("run", torchscript_path, digits_dir, "--out", tmp_path / "o", "--checks", "clean", "--limit", "40",
                 "--policy", policy, "--quiet")
    assert r.returncode != 0
    assert read_summary(tmp_path / "o")["gate"]["passed"] is False


def _ranks(rank: int, world: int, init: str, results) -> None:
    import torch.distributed as dist

    from cnnaudit.distributed import Shard
    from cnnaudit.errors import AuditError
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        shard = Shard(rank=rank, world_size=world)
        # 5 items over 2 ranks: rank 0 computes 0, 2, 4 and rank 1 computes 1, 3; all get them in order
        out = {"mine": shard.mine(5), "map": shard.map(list("abcde"), lambda c: (c.upper(), rank))}
        shard.agree("same", "model file")
        try:
            shard.agree(f"copy {rank}", "data table")
        except AuditError as exc:
            out["error"] = str(exc)
        results[rank] = out
    finally:
        dist.destroy_process_group()


def test_shard_gathers_in_order_and_refuses_different_copies(tmp_path):
    import torch.multiprocessing as mp
    results = mp.Manager().dict()
    mp.spawn(_ranks, args=(2, f"file://{tmp_path / 'rendezvous'}", results), nprocs=2)
    assert results[0]["mine"] == [0, 2, 4] and results[1]["mine"] == [1, 3]
    expected = [("A", 0), ("B", 1), ("C", 0), ("D", 1), ("E", 0)]
    assert results[0]["map"] == expected and results[1]["map"] == expected
    for rank in (0, 1):
        assert "process 1 of 2 sees a different data table" in results[rank]["error"]
