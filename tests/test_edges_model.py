"""Issue 27's edges of the model, --resume and the training check: a Hugging Face folder that would run its
own code is refused, a `.squeeze()` head audited in batches of one, --resume keyed by the mask files and
never crashed by a damaged checkpoint, a blank --group-id, the ONNX floor, and near copies found on dense
real digits with a threshold calibrated on the data."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version
from PIL import Image
from torch import nn

import cnnaudit
from cnnaudit.demo import write_image_folder
from cnnaudit.errors import AuditError
from cnnaudit.model.wrapper import build_audited_model
from tests.conftest import CLASSES, read_summary, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _strict_json(path: Path) -> dict:
    """summary.json read as strict JSON: NaN or Infinity in it fails (CI readers in other languages refuse them)."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


# --- a Hugging Face folder that asks to run its own code -----------------------------------------------

def _hf_folder(folder: Path) -> Path:
    from transformers import ResNetConfig, ResNetForImageClassification
    torch.manual_seed(0)
    cfg = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10)
    ResNetForImageClassification(cfg).eval().save_pretrained(str(folder))
    return folder


def test_a_hugging_face_folder_with_custom_code_is_refused_and_its_code_never_runs(tmp_path, digits_dir):
    """config.json's auto_map names a module in the folder that writes a marker when imported. Even with "y"
    typed at the terminal (transformers' "run the custom code? [y/N]"), the audit refuses in one sentence
    (exit 2) and the marker is never written; the same folder without auto_map loads and audits."""
    folder = _hf_folder(tmp_path / "hf")
    cmd = [sys.executable, "-m", "cnnaudit", "run", str(folder), str(digits_dir), "--checks", "none",
           "--limit", "20", "--quiet", "--out", str(tmp_path / "plain")]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr  # the control: the folder itself is fine

    marker = tmp_path / "custom-code-ran"
    (folder / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import ResNetForImageClassification as EvilModel\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "modeling_evil.EvilModel",
                       "AutoModelForImageClassification": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    cmd[-1] = str(tmp_path / "evil")
    r = subprocess.run(cmd, capture_output=True, text=True, input="y\n", timeout=600)
    assert r.returncode == 2, r.stderr
    assert "auto_map" in r.stderr and "never runs a model's own code" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    assert not (tmp_path / "evil" / "summary.json").exists()


def test_the_onnx_floor_excludes_the_path_traversal_releases():
    """onnx < 1.16 follows external-data paths out of the model's folder (CVE-2024-27318): both extras
    that install onnx require 1.16 or later."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    floors = [Requirement(r) for name in ("onnx", "test") for r in extras[name] if Requirement(r).name == "onnx"]
    assert len(floors) == 2
    for req in floors:
        assert not req.specifier.contains("1.15.9") and req.specifier.contains("1.16.0"), str(req)
        assert all(Version(s.version) >= Version("1.16") for s in req.specifier if s.operator == ">=")


# --- a head that drops the batch dimension for one image -----------------------------------------------

class Squeezed(nn.Module):
    """A real pattern: `return self.fc(x).squeeze()` gives [C] for a batch of one, not [1, C]."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).squeeze()


class Reshaping(nn.Module):
    """A model whose output shape changes after its first calls (what the per-call check exists for)."""

    def __init__(self, inner: nn.Module, after: int):
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, x):
        self.calls += 1
        out = self.inner(x)
        return out if self.calls <= self.after else out[:, :5]


def test_a_squeeze_head_is_padded_to_two_images_with_the_same_logits_and_gradients(eager_model):
    model = Squeezed(eager_model).eval()
    wrapped, n = build_audited_model(model, channels=1, input_size=(32, 32), mean=None, std=None,
                                     device=torch.device("cpu"))
    assert n == 10 and wrapped.pad_single and wrapped.describe()["pads_batch_of_one"] is True
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    one = x[:1].clone().requires_grad_(True)
    logits = wrapped(one)
    assert logits.shape == (1, 10)
    torch.testing.assert_close(logits, eager_model(x[:1]), rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(logits[0, 3], one)
    ref = x[:1].clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(eager_model(ref)[0, 3], ref)
    torch.testing.assert_close(grad, expected)  # the padding copy is detached: no gradient leaks into it
    plain, _ = build_audited_model(eager_model, channels=1, input_size=(32, 32), mean=None, std=None,
                                   device=torch.device("cpu"))
    assert not plain.pad_single


def test_a_model_that_changes_its_output_shape_stops_with_one_sentence(eager_model):
    model = Reshaping(eager_model, after=4).eval()
    wrapped, _ = build_audited_model(model, channels=1, input_size=(32, 32), mean=None, std=None,
                                     device=torch.device("cpu"))
    model.calls = model.after  # the next call is the first with the new shape
    with pytest.raises(AuditError, match=r"shape \(4, 5\) for a batch of 4 image\(s\), where the probe saw \(4, 10\)"):
        wrapped(torch.rand(4, 1, 32, 32))


def test_a_squeeze_head_audits_like_the_plain_model(tmp_path, eager_model, digits_dir):
    """41 images in batches of 8 end with a batch of one, which crashed mid-audit before; the squeezed
    model now makes the plain model's decisions on every image, attacks included."""
    scripted = tmp_path / "squeezed.pt"
    torch.jit.save(torch.jit.script(Squeezed(eager_model).eval()), str(scripted))
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(eager_model.eval()), str(plain))
    args = ["--checks", "adversarial", "--norms", "linf", "--eps-linf", "0.05", "--attacks", "fgsm,pgd",
            "--limit", "41", "--batch-size", "8",
            "--quiet"]
    r = run_cli("run", scripted, digits_dir, "--out", tmp_path / "sq", *args)
    assert r.returncode == 0, r.stderr
    q = run_cli("run", plain, digits_dir, "--out", tmp_path / "pl", *args)
    assert q.returncode == 0, q.stderr
    s, p = read_summary(tmp_path / "sq"), read_summary(tmp_path / "pl")
    assert s["model"]["pads_batch_of_one"] is True and p["model"]["pads_batch_of_one"] is False
    assert s["clean"]["accuracy"] == p["clean"]["accuracy"]
    assert [r["robust_accuracy"] for r in s["adversarial"]["results"]] == \
        [r["robust_accuracy"] for r in p["adversarial"]["results"]]
    rows = pd.read_csv(tmp_path / "sq" / "samples.csv")
    assert rows[rows["condition"] == "clean"]["sample_id"].nunique() == 41


# --- --resume ----------------------------------------------------------------------------------------

def _masked_copy(src: Path, dst: Path, n: int = 40) -> Path:
    """n digits with a `ruler` artifact marked by mask files on every fourth image."""
    paths = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png"))[:n]
    rows = []
    (dst / "masks").mkdir(parents=True)
    for i, rel in enumerate(paths):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes((src / rel).read_bytes())
        has = i % 4 == 0
        if has:
            m = np.zeros((32, 32), np.uint8)
            m[26:30, 3:29] = 255
            Image.fromarray(m).save(dst / "masks" / f"{i}.png")
        rows.append({"path": rel, "ruler": int(has), "ruler_mask": f"masks/{i}.png" if has else ""})
    pd.DataFrame(rows).to_csv(dst / "metadata.csv", index=False)
    (dst / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return dst


def test_resume_recomputes_the_shortcut_check_when_a_mask_changes(tmp_path, torchscript_path, digits_dir):
    data = _masked_copy(digits_dir, tmp_path / "d")
    out = tmp_path / "out"
    args = ["run", torchscript_path, data, "--checks", "shortcuts", "--artifact", "ruler", "--out", out,
            "--resume", "--quiet"]
    assert run_cli(*args).returncode == 0
    assert run_cli(*args).returncode == 0 and read_summary(out)["timing"]["resumed"] == ["clean", "shortcuts"]
    m = np.zeros((32, 32), np.uint8)
    m[0:8, 0:8] = 255  # the annotation moved: the shortcut check measures another region now
    Image.fromarray(m).save(data / "masks" / "0.png")
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert read_summary(out)["timing"]["resumed"] == []  # the data changed: nothing is reused


@pytest.mark.parametrize("damage", ["dtype", "frames", "truncated"])
def test_a_damaged_checkpoint_is_recomputed_not_a_crash(tmp_path, torchscript_path, digits_dir, damage):
    out = tmp_path / "o"
    args = ["--checks", "none", "--limit", "30", "--quiet", "--resume"]
    assert run_cli("run", torchscript_path, digits_dir, "--out", out, *args).returncode == 0
    first = read_summary(out)
    folder = out / ".cnnaudit-checkpoints"
    (meta_path,) = folder.glob("clean-*.json")
    meta = json.loads(meta_path.read_text())
    if damage == "dtype":  # a dtype pandas does not know: TypeError, which the reader did not catch
        meta["frames"]["rows"][0]["dtype"] = "not-a-dtype"
        meta_path.write_text(json.dumps(meta))
    elif damage == "frames":  # a list where a mapping belongs: AttributeError
        meta["frames"] = [1, 2]
        meta_path.write_text(json.dumps(meta))
    else:
        (npz,) = folder.glob("clean-*.npz")
        npz.write_bytes(npz.read_bytes()[:100])
    r = run_cli("run", torchscript_path, digits_dir, "--out", out, *args)
    assert r.returncode == 0, r.stderr
    again = read_summary(out)
    assert again["timing"]["resumed"] == []
    assert again["clean"] == first["clean"]


# --- the training check ------------------------------------------------------------------------------

def test_a_blank_group_id_is_no_identifier(tmp_path, digits, eager_model):
    """Blank patient cells in both sets share nothing: no group leakage, counted, and a summary that is
    strict JSON (pandas 3 kept NaN through astype(str), which counted as a shared id, then wrote NaN)."""
    x, y, meta = digits
    train, evaluation = tmp_path / "train", tmp_path / "eval"
    t_ids = [f"p{i}" if i % 3 else "" for i in range(120)]
    e_ids = [f"q{i}" if i % 4 else "" for i in range(60)]
    e_ids[1] = "p1"  # one real shared identifier
    write_image_folder(train, x[:120], y[:120], pd.DataFrame({"patient": t_ids}), CLASSES)
    write_image_folder(evaluation, x[1000:1060], y[1000:1060], pd.DataFrame({"patient": e_ids}), CLASSES)
    model = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(eager_model), str(model))
    out = tmp_path / "out"
    r = run_cli("run", model, evaluation, "--train-data", train, "--checks", "training", "--group-id", "patient",
                "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    s = _strict_json(out / "summary.json")
    t = s["training"]
    assert t["leakage_counts"]["group"] == 1
    assert [leak["group"] for leak in t["leakage"] if leak["kind"] == "group"] == ["p1"]
    assert t["group_id_blank"] == {"eval": 15, "train": 40}
    assert s["complete"] is True


def _jpeg_shifted(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.roll(img, 1, axis=1)).save(buf, format="JPEG", quality=75)
    return buf.getvalue()


@pytest.mark.parametrize("side", [16, 64])
def test_near_copies_on_dense_real_digits(tmp_path, digits, eager_model, side):
    """The issue's case: ~600 held-out real digits, ~1,240 training digits of which 40 are evaluation images
    re-encoded as JPEG and shifted by a pixel. A fixed threshold flagged 29% of the evaluation set (same-class
    look-alikes) and found 30 of the 40; the calibrated one must find at least 36 (90%) with their true
    source and flag at most 6 others (1%). Stored at 16 and 64 px for a 32 px model: a pixel of shift is
    then half a cell of the 8 x 8 search thumbnail (the unshifted search found 16 of 40) or half a pixel of
    the 32 x 32 verification thumbnail (no integer shift absorbs it: 31 of 40, with 16 false pairs)."""
    x, y, meta = digits
    x = torch.nn.functional.interpolate(x, size=(side, side), mode="area" if side < 32 else "bilinear")
    perm = np.random.default_rng(3).permutation(len(y))
    ev, tn = perm[:600], perm[600:]
    planted = np.random.default_rng(4).choice(600, 40, replace=False)
    train, evaluation = tmp_path / "train", tmp_path / "eval"
    write_image_folder(evaluation, x[ev], y[ev], pd.DataFrame(index=range(600)), CLASSES)
    write_image_folder(train, x[tn], y[tn], pd.DataFrame(index=range(len(tn))), CLASSES)
    train_meta = pd.read_csv(train / "metadata.csv")
    truth = {}
    for k, i in enumerate(planted):
        img = (x[ev[i]][0].numpy() * 255 + 0.5).astype(np.uint8)
        name = f"{y[ev[i]]}/copy{k}.jpg"
        (train / name).write_bytes(_jpeg_shifted(img))
        train_meta.loc[len(train_meta)] = {"path": name}
        truth[f"{y[ev[i]]}/{i:05d}.png"] = name
    train_meta.to_csv(train / "metadata.csv", index=False)
    assert len(train_meta) == 1237
    result = cnnaudit.audit(eager_model, evaluation, train_data=train, checks=["training"], input_size=(32, 32))
    t = result.summary["training"]
    near = {leak["eval_path"]: leak["train_path"] for leak in t["leakage"] if leak["kind"] == "near"}
    assert t["leakage_counts"]["near"] <= len(t["leakage"])  # every pair is listed at this size
    found = sum(near.get(e) == src for e, src in truth.items())
    false = sum(e not in truth for e in near)
    assert found >= 36, (found, t["near_copy_threshold"])
    assert false <= 6, (false, t["near_copy_threshold"])
    cal = t["near_copy_threshold"]
    assert 0 < cal["threshold"] <= cal["bound"] and cal["n_reference"] >= 1000


def test_a_training_set_full_of_its_own_copies_keeps_the_threshold(digits):
    """Every training image saved three times (augmented copies on disk): each one's nearest neighbour is its
    own twin at distance 0. Those are passed over, so the threshold is still calibrated on distinct
    look-alikes instead of collapsing to zero, and re-encoded, shifted copies of evaluation images are found."""
    from cnnaudit.bias import training as tr
    x, _, _ = digits
    big = (x[:, 0].numpy() * 255 + 0.5).astype(np.uint8)
    planted = [np.array(Image.open(io.BytesIO(_jpeg_shifted(big[600 + i])))) for i in range(20)]
    train = np.concatenate([big[:500]] * 3 + [np.stack(planted)])
    found, cal = tr.near_copies(train, big[600:900], seed=0)
    assert cal["calibrated"] and cal["threshold"] > 0.05, cal
    hits = {i: j for i, j, _ in found}
    assert sum(hits.get(i) == 1500 + i for i in range(20)) >= 18
    assert sum(i >= 20 for i in hits) <= 3


def test_a_numeric_group_id_matches_across_a_set_with_blanks_and_one_without(tmp_path, digits, eager_model):
    """A blank cell makes pandas read a column of ids as floats (17.0) while the other set reads them as
    integers (17): the shared id must still be found."""
    x, y, _ = digits
    train, evaluation = tmp_path / "train", tmp_path / "eval"
    t_ids = [str(i) if i % 5 else "" for i in range(100)]  # blanks: read as floats
    e_ids = [str(1000 + i) for i in range(40)]
    e_ids[3] = "17"  # shared with training, where it reads 17.0
    write_image_folder(train, x[:100], y[:100], pd.DataFrame({"patient": t_ids}), CLASSES)
    write_image_folder(evaluation, x[1000:1040], y[1000:1040], pd.DataFrame({"patient": e_ids}), CLASSES)
    result = cnnaudit.audit(eager_model, evaluation, train_data=train, checks=["training"],
                            training={"group_id": "patient"})
    t = result.summary["training"]
    assert [leak["group"] for leak in t["leakage"] if leak["kind"] == "group"] == ["17"]
    assert t["group_id_blank"] == {"eval": 0, "train": 20}


def test_a_padded_batch_of_one_keeps_the_models_embedding(eager_model):
    """The embedding hook sees the padded pair; the real image's row is kept (not a fall back to image
    features for the whole set)."""
    from cnnaudit.model.embeddings import embedding_layer, model_embedding
    from cnnaudit.model.loading import LoadedModel
    model = Squeezed(eager_model).eval()
    wrapped, _ = build_audited_model(model, channels=1, input_size=(32, 32), mean=None, std=None,
                                     device=torch.device("cpu"))
    layer = embedding_layer(LoadedModel(model, "", "module", None, supports_hooks=True))
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    one, three = model_embedding(wrapped, layer, x[:1]), model_embedding(wrapped, layer, x)
    assert one is not None and one.shape[0] == 1
    np.testing.assert_allclose(one[0], three[0], rtol=1e-5, atol=1e-6)


def test_two_outputs_on_one_path_are_refused_before_any_work(tmp_path, torchscript_path, digits_dir):
    out = tmp_path / "out"
    r = run_cli("run", torchscript_path, digits_dir, "--out", out, "--model-card", out / "report.html", "--quiet")
    assert r.returncode == 2 and "--model-card" in r.stderr and "report.html" in r.stderr, r.stderr
    assert not (out / "summary.json").exists()
    policy = tmp_path / "p.toml"
    policy.write_text('[[rule]]\nkind = "min_clean_accuracy"\nthreshold = 0.1\n')
    r = run_cli("run", torchscript_path, digits_dir, "--out", out, "--policy", policy, "--junit", tmp_path / "g.txt",
                "--markdown", tmp_path / "g.txt", "--quiet")
    assert r.returncode == 2 and "--markdown and --junit both name" in r.stderr, r.stderr
    assert not (out / "summary.json").exists()
