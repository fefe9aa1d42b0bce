"""Every check on every model shape users bring: the default audit completes, and says what it saw.

Each zoo model is audited end to end (clean, adversarial, corruption, subgroups, shortcuts) on 20 real
digits, the way `cnnaudit run model data/` would, and the summary must be complete and describe the
model correctly (output kind, static batch, randomness).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import cnnaudit
from cnnaudit.demo import DigitsCNN, DEMO_EPS
from tests import zoo
from tests.conftest import read_summary, run_cli

pytestmark = pytest.mark.slow  # every model format, each audited end to end: `-m "not slow"` skips it

ALL_CHECKS = ["clean", "adversarial", "corruption", "subgroups", "shortcuts"]
N = 20


@pytest.fixture(scope="session")
def binary_model(digits):
    x, y, _ = digits
    return zoo.train(DigitsCNN(num_classes=2), x[:1000], zoo.binary_labels(y[:1000]))


@pytest.fixture(scope="session")
def binary_dir(tmp_path_factory, digits):
    x, y, meta = digits
    idx = np.arange(1000, 1300)
    return zoo.write_binary_folder(tmp_path_factory.mktemp("binary") / "data", x[idx], y[idx], meta.iloc[idx])


@pytest.fixture(scope="session")
def wide_dir(tmp_path_factory, digits_dir):
    """The digits with a 1,000-class list (classes 10-999 have no images, as in an ImageNet subset)."""
    import shutil
    root = tmp_path_factory.mktemp("wide") / "data"
    shutil.copytree(digits_dir, root)
    (root / "classes.txt").write_text("\n".join([str(i) for i in range(10)] + [f"c{i}" for i in range(10, 1000)]))
    return root


def _zoo(name, models, tmp, digits):
    """(model, data fixture name, audit kwargs, expected summary.model facts) for zoo entry `name`."""
    x, y, _ = digits
    eager, binary = models
    ten, two = "digits_dir", "binary_dir"
    if name == "two_logit":
        return binary, two, {}, {"output_kind": "logits"}
    if name == "single_logit":
        return zoo.SingleLogit(binary), two, {}, {"output_kind": "single_logit", "positive_class": "malignant"}
    if name == "single_logit_n1":
        return zoo.SingleLogit(binary, keepdim=True), two, {}, {"output_kind": "single_logit"}
    if name == "sigmoid_probability":
        return (zoo.SingleLogit(binary, keepdim=True, sigmoid=True), two, {},
                {"output_kind": "single_probability"})
    if name == "dict_logits":
        return zoo.DictOutput(eager), ten, {}, {"output_kind": "dict[logits]", "output_values": "logits"}
    if name == "logits_attribute":
        return zoo.AttributeOutput(eager), ten, {}, {"output_kind": "dict[logits]"}
    if name == "tuple":
        return zoo.TupleOutput(eager), ten, {}, {"output_kind": "tuple[0]"}
    if name == "probabilities":
        return nn.Sequential(eager, nn.Softmax(dim=1)), ten, {}, {"output_kind": "probabilities"}
    if name == "log_probabilities":
        return nn.Sequential(eager, nn.LogSoftmax(dim=1)), ten, {}, {"output_kind": "log_probabilities"}
    if name == "scripted":
        path = tmp / "scripted.pt"
        torch.jit.save(torch.jit.script(eager), str(path))
        return path, ten, {}, {"format": "torchscript"}
    if name == "traced_view":
        view = zoo.train(zoo.ViewCNN(), x[:1000], y[:1000], epochs=2)
        return zoo.save_traced(view, tmp / "view.pt", torch.rand(2, 1, 32, 32)), ten, {}, {"format": "torchscript"}
    if name == "static_batch_export":
        path = zoo.save_static_export(eager, tmp / "static.pt2", batch=4)
        return path, ten, {"unsafe_pickle": True}, {"format": "export", "fixed_batch_size": 4}
    if name == "dynamic_export":
        ep = torch.export.export(eager, (torch.zeros(2, 1, 32, 32),),
                                 dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
        torch.export.save(ep, str(tmp / "dynamic.pt2"))
        return tmp / "dynamic.pt2", ten, {"unsafe_pickle": True}, {"format": "export", "fixed_batch_size": None}
    if name == "randomized":
        return zoo.Randomized(eager), ten, {}, {"stochastic": True, "eot_draws": 9}
    if name == "fp16_weights":
        import copy
        return copy.deepcopy(eager).half(), ten, {}, {"input_dtype": "float16"}
    if name == "channels_last":
        import copy
        return copy.deepcopy(eager).to(memory_format=torch.channels_last), ten, {}, {"output_kind": "logits"}
    if name == "classes_1000":
        return zoo.widen(eager, 1000), "wide_dir", {}, {"num_classes": 1000}
    if name == "onnx_static_batch":
        path = zoo.save_onnx(eager, tmp / "model.onnx")
        return path, ten, {}, {"format": "onnx", "fixed_batch_size": 1}
    if name == "timm_safetensors":
        path = zoo.save_timm_safetensors(tmp / "resnet.safetensors", x[:600], y[:600])
        return path, ten, {"arch": "timm:test_convnext", "num_classes": 10, "channels": 1}, {"format": "safetensors"}
    if name == "huggingface":
        folder = zoo.save_huggingface(tmp / "hf", x[:1000], y[:1000])
        return folder, ten, {}, {"format": "huggingface", "mean": [0.5], "std": [0.5]}
    raise KeyError(name)


ZOO = ["two_logit", "single_logit", "single_logit_n1", "sigmoid_probability", "dict_logits", "logits_attribute",
       "tuple", "probabilities", "log_probabilities", "scripted", "traced_view", "static_batch_export", "dynamic_export",
       "randomized", "fp16_weights", "channels_last", "classes_1000", "onnx_static_batch", "timm_safetensors",
       "huggingface"]
# trained on digits, so well above chance; the Hugging Face ResNet's batch norm has seen few steps
MIN_ACCURACY = {"huggingface": 0.4}


@pytest.mark.parametrize("name", ZOO)
def test_every_check_completes_on_every_zoo_model(name, request, tmp_path, digits, eager_model, binary_model):
    model, data_fixture, kwargs, expected = _zoo(name, (eager_model, binary_model), tmp_path, digits)
    data = request.getfixturevalue(data_fixture)
    result = cnnaudit.audit(model, data, limit=N, seed=0, **kwargs,
                            adversarial={"eps": {"linf": DEMO_EPS["linf"][:2], "l2": DEMO_EPS["l2"][:1]}},
                            shortcuts={"artifacts": ("ruler",)})
    s = result.summary
    assert s["errors"] == [] and s["complete"] is True
    for check in ALL_CHECKS:
        assert check in s and not s[check].get("failed"), check
    m = s["model"]
    for key, value in expected.items():
        assert m.get(key, s.get(key)) == value, (key, m.get(key))
    if "stochastic" not in expected:
        assert m["stochastic"] is False and m["eot_draws"] is None
    assert s["clean"]["accuracy"] >= MIN_ACCURACY.get(name, 0.6), s["clean"]["accuracy"]
    adv = s["adversarial"]
    assert len(adv["results"]) == 2 * 3 and all(r["robust_accuracy"] is not None for r in adv["results"])
    names = {c["check"] for c in adv["sanity"]}
    assert {"gradients_usable", "large_eps_reaches_zero_linf", "iterative_beats_single_step_l2"} <= names
    assert len(s["corruption"]["results"]) > 0
    assert "ruler" in s["shortcuts"]["artifacts"]
    html = result.html()
    assert f"<code>{m['output_kind']}</code>" in html


def test_binary_models_get_the_margin_loss_and_every_sanity_check(binary_model, binary_dir):
    s = cnnaudit.audit(binary_model, binary_dir, limit=60, checks=["adversarial"],
                       adversarial={"eps": DEMO_EPS, "attack_strength": "standard"}).summary
    assert s["adversarial"]["losses"] == {"ce": "Margin", "dlr": "Margin"}
    names = {c["check"] for c in s["adversarial"]["sanity"]}
    assert {"iterative_beats_single_step_linf", "large_eps_reaches_zero_linf", "large_eps_reaches_zero_l2",
            "gradients_usable"} <= names
    assert all(c["passed"] for c in s["adversarial"]["sanity"]), s["adversarial"]["sanity"]
    # the attacks do break a binary model at a large budget (a loss stuck at zero gradient would not)
    worst = {(r["norm"], r["eps"]): r["robust_accuracy"] for r in s["adversarial"]["results"] if r["attack"] == "worst_case"}
    assert worst[("linf", 0.3)] < 0.2 < s["clean"]["accuracy"]


def test_autoattack_runs_on_two_class_models_without_dlr(binary_model):
    """ART's standard AutoAttack includes APGD-DLR, which indexes a third logit; for two classes cnnaudit
    gives it APGD on the margin, DeepFool and Square instead (--attacks ...,autoattack)."""
    from art.attacks.evasion import AutoProjectedGradientDescent
    from cnnaudit.attacks import AttackRunner
    from cnnaudit.attacks.losses import Margin
    from cnnaudit.checks.adversarial import spec
    from cnnaudit.model.wrapper import build_audited_model
    from cnnaudit.demo import digits_images
    x, y, _ = digits_images(0)
    model, _ = build_audited_model(zoo.SingleLogit(binary_model), channels=1, input_size=(32, 32), mean=None,
                                   std=None, device=torch.device("cpu"))
    runner = AttackRunner(model, num_classes=2, batch_size=64)
    attacks = runner.art._autoattack_two_classes(runner.art.estimator("ce"), 0.3, "linf")
    assert [type(a).__name__ for a in attacks] == ["AutoProjectedGradientDescent", "DeepFool", "SquareAttack"]
    assert isinstance(runner.art.estimator("ce")._loss, Margin)
    assert all(getattr(a, "loss_type", None) is None for a in attacks if isinstance(a, AutoProjectedGradientDescent))
    xs, ys = x[1000:1004], torch.as_tensor(zoo.binary_labels(y[1000:1004]))
    adv = runner.run(spec("autoattack"), xs, ys, eps=0.3, norm="linf", seed=0)
    assert float((adv - xs).abs().max()) <= 0.3 + 1e-6
    assert bool((model(adv).argmax(dim=1) != ys).all())


@pytest.mark.parametrize("head", ["two_logit", "single_logit"])
def test_binary_logit_scaled_twin_gets_the_same_robust_accuracy(head, binary_model, binary_dir):
    """Two models that make the same decisions get the same verdict, for binary heads too."""
    base = binary_model if head == "two_logit" else zoo.SingleLogit(binary_model)
    opts = {"adversarial": {"eps": DEMO_EPS}}
    a = cnnaudit.audit(base, binary_dir, limit=150, checks=["adversarial"], options=opts).summary
    b = cnnaudit.audit(zoo.Scaled(base, 1e4), binary_dir, limit=150, checks=["adversarial"], options=opts).summary
    ra = {(r["norm"], r["eps"], r["attack"]): r["robust_accuracy"] for r in a["adversarial"]["results"]}
    rb = {(r["norm"], r["eps"], r["attack"]): r["robust_accuracy"] for r in b["adversarial"]["results"]}
    assert ra.keys() == rb.keys() and len(ra) == 14
    for key in ra:
        assert abs(ra[key] - rb[key]) <= 0.02, (key, ra[key], rb[key])
    # the budgets are not trivial: robust accuracy spans a range
    worst = [ra[k] for k in ra if k[2] == "worst_case"]
    assert max(worst) > 0.5 and min(worst) < 0.2


def test_single_logit_positive_class_decides_which_class_the_logit_means(binary_model, binary_dir):
    head = zoo.SingleLogit(binary_model)  # its logit means "malignant"
    right = cnnaudit.audit(head, binary_dir, checks=[], limit=100).summary
    flipped = cnnaudit.audit(head, binary_dir, checks=[], limit=100, positive_class="benign").summary
    assert right["model"]["positive_class"] == "malignant" and right["clean"]["accuracy"] > 0.75
    assert abs(flipped["clean"]["accuracy"] - (1 - right["clean"]["accuracy"])) < 1e-9
    two = cnnaudit.audit(binary_model, binary_dir, checks=[], limit=100).summary
    assert right["clean"]["accuracy"] == two["clean"]["accuracy"]  # softmax([0, z1 - z0]) = softmax([z0, z1])
    assert right["clean"]["ece"] == pytest.approx(two["clean"]["ece"], abs=1e-6)


def test_single_logit_errors_name_the_flag_and_the_classes(binary_model, binary_dir, digits_dir):
    head = zoo.SingleLogit(binary_model)
    with pytest.raises(cnnaudit.AuditError, match="single output.*10 classes"):
        cnnaudit.audit(head, digits_dir, checks=[])
    with pytest.raises(cnnaudit.AuditError, match="--positive-class 'cancer'"):
        cnnaudit.audit(head, binary_dir, checks=[], positive_class="cancer")
    with pytest.raises(cnnaudit.AuditError, match="--positive-class applies to models with a single output"):
        cnnaudit.audit(binary_model, binary_dir, checks=[], positive_class="benign")


def test_unreadable_outputs_are_named_in_one_sentence(digits_dir):
    class ReturnsString(nn.Module):
        def forward(self, x):
            return {"scores": x.mean()}

    with pytest.raises(cnnaudit.AuditError, match=r"returned a dict with keys \['scores'\]"):
        cnnaudit.audit(ReturnsString(), digits_dir, checks=[], channels=1)


def test_the_model_is_never_called_on_an_empty_batch(eager_model, digits_dir, tmp_path):
    traced = torch.jit.load(str(zoo.save_traced(zoo.ViewCNN().eval(), tmp_path / "v.pt", torch.rand(2, 1, 32, 32))))
    with pytest.raises(RuntimeError):
        traced(torch.rand(0, 1, 32, 32))  # the model itself cannot take one
    from cnnaudit.model.wrapper import build_audited_model
    wrapped, n = build_audited_model(traced, channels=1, input_size=(32, 32), mean=None, std=None,
                                     device=torch.device("cpu"))
    assert wrapped(torch.rand(0, 1, 32, 32)).shape == (0, 10)


def test_static_batch_models_are_padded_and_give_the_dynamic_models_answers(eager_model, tmp_path):
    from cnnaudit.model.loading import load_model
    from cnnaudit.model.wrapper import build_audited_model
    loaded = load_model(zoo.save_static_export(eager_model, tmp_path / "s.pt2", batch=4), unsafe_pickle=True)
    assert loaded.batch_hint == 4
    wrapped, _ = build_audited_model(loaded.module, channels=None, input_size=(32, 32), mean=None, std=None,
                                     device=torch.device("cpu"), batch_hint=loaded.batch_hint)
    assert wrapped.fixed_batch == 4 and wrapped.channels == 1
    x = torch.rand(11, 1, 32, 32, requires_grad=True)
    out = wrapped(x)
    torch.testing.assert_close(out, eager_model(x), rtol=1e-5, atol=1e-5)
    out[:, 0].sum().backward()  # gradients reach every real image, and only them
    ref = torch.autograd.grad(eager_model(x)[:, 0].sum(), x)[0]
    torch.testing.assert_close(x.grad, ref, rtol=1e-4, atol=1e-6)


def test_randomized_models_are_detected_and_deterministic_ones_are_not(eager_model, digits_dir):
    s = cnnaudit.audit(zoo.Randomized(eager_model), digits_dir, checks=[], limit=80).summary
    assert s["model"]["stochastic"] is True and s["model"]["eot_draws"] == 9
    assert 0 <= s["model"]["prediction_agreement"] < 1
    assert any(f["kind"] == "stochastic" and "randomized at inference" in f["title"] for f in s["findings"])
    d = cnnaudit.audit(eager_model, digits_dir, checks=[], limit=80).summary
    assert d["model"]["stochastic"] is False and d["model"]["prediction_agreement"] == 1.0
    assert d["model"]["max_logit_change"] == 0.0


def test_randomized_model_attacks_use_eot_votes(eager_model, digits_dir):
    """With EOT a broken example is one most fresh draws misclassify: re-checking the stored rows by
    majority vote of new draws agrees with them far more often than one draw would."""
    model = zoo.Randomized(eager_model, sigma=0.1)
    result = cnnaudit.audit(model, digits_dir, checks=["adversarial"], limit=60,
                            adversarial={"eps": {"linf": [0.1]}, "norms": ("linf",)})
    adv = result.summary["adversarial"]
    assert adv["eot_draws"] == 9
    worst = next(r for r in adv["results"] if r["attack"] == "worst_case")
    assert 0.0 < worst["robust_accuracy"] < result.summary["clean"]["accuracy"]


def _confident_linear_model(classes: int):
    """A linear many-class model on which class 7 wins every sample by a margin of at least 15 while the
    other logits cluster together: the regime of a confident ImageNet-style classifier."""
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, classes))
    x = torch.rand(16, 3, 8, 8)
    with torch.no_grad():
        lin[1].weight.normal_(0, 0.1)
        lin[1].weight[7].normal_(0, 1)
        lin[1].bias.zero_()
        z = lin(x)
        lin[1].bias[7] = float((z[:, torch.arange(classes) != 7].max(dim=1).values - z[:, 7]).max()) + 15

    class Model(nn.Module):
        device = torch.device("cpu")
        channels, input_size = 3, (8, 8)

        def forward(self, v):
            return lin(v)

    return Model(), x, torch.full((16,), 7)


@pytest.mark.parametrize("classes", [100, 1000])
def test_l2_fgsm_flips_confident_samples_of_many_class_models(classes):
    import torch.nn.functional as F
    from cnnaudit.attacks import AttackRunner
    from cnnaudit.attacks.ball import ascent_direction
    model, x, y = _confident_linear_model(classes)
    top2 = model(x).detach().topk(2).values
    assert float((top2[:, 0] - top2[:, 1]).min()) >= 15 - 1e-4
    adv = AttackRunner(model, num_classes=classes, batch_size=16).fgsm(x, y, eps_list=[8.0], norm="l2", seed=0)[8.0]
    assert float((model(adv).argmax(dim=1) != y).float().mean()) >= 0.9
    # the textbook loss on the same rescaled logits: p_y - 1 rounds to 0, its gradient loses the true class's
    # term and the same step barely moves the margin
    xg = x.clone().requires_grad_(True)
    z = model(xg)
    zs = z / (z.std(dim=1, keepdim=True).detach() / 6)
    (grad,) = torch.autograd.grad(F.cross_entropy(zs, y, reduction="sum"), xg)
    textbook = (x + 8.0 * ascent_direction(grad, "l2")).clamp(0, 1)
    assert float((model(textbook).argmax(dim=1) != y).float().mean()) <= 0.1


def test_l2_direction_has_unit_length_when_the_gradient_squares_underflow():
    from cnnaudit.attacks.ball import ascent_direction
    grad = torch.randn(4, 3, 16, 16) * 1e-25  # squares ~1e-50: below float32's smallest number
    assert float(grad.flatten(1).pow(2).sum(dim=1).max()) == 0.0
    d = ascent_direction(grad, "l2")
    torch.testing.assert_close(d.flatten(1).norm(dim=1), torch.ones(4))
    torch.testing.assert_close(d, grad / grad.double().flatten(1).norm(dim=1).view(-1, 1, 1, 1).float())


def test_a_failing_check_leaves_the_others_complete_and_exits_3(tmp_path, digits_dir):
    """A model whose forward leaves torch cannot be attacked; the adversarial check fails, every other
    check reports, the outputs are written, a rule on the failed check fails, and the exit code is 3."""
    torch.save(zoo.NonDifferentiable().state_dict(), tmp_path / "nd.pt")
    policy = tmp_path / "gate.toml"
    policy.write_text('[[rule]]\nkind = "min_robust_accuracy"\nnorm = "linf"\neps = "8/255"\nthreshold = 0.0\n'
                      '[[rule]]\nkind = "min_clean_accuracy"\nthreshold = 0.0\n')
    out = tmp_path / "out"
    proc = run_cli("run", tmp_path / "nd.pt", digits_dir, "--arch", "tests.zoo:NonDifferentiable",
                   "--num-classes", "10", "--limit", "30", "--out", out, "--policy", policy,
                   "--artifact", "ruler", "--quiet")
    assert proc.returncode == 3, proc.stderr
    assert "audit incomplete" in proc.stderr and "Traceback" not in proc.stderr
    s = read_summary(out)
    assert s["complete"] is False and [e["check"] for e in s["errors"]] == ["adversarial"]
    assert "numpy" in s["errors"][0]["error"].lower()
    assert s["adversarial"]["failed"] is True
    for check in ("corruption", "subgroups", "shortcuts"):
        assert check in s and not s[check].get("failed")
    rules = {r["kind"]: r for r in s["gate"]["rules"]}
    assert rules["min_robust_accuracy"]["passed"] is False and "failed" in rules["min_robust_accuracy"]["detail"]
    assert rules["min_clean_accuracy"]["passed"] is True
    assert "Traceback" in (out / "errors.log").read_text()
    html = (out / "report.html").read_text()
    assert "Audit INCOMPLETE" in html and "This check failed" in html
    assert (out / "samples.csv").is_file()
    # re-judging the incomplete summary says so too
    regate = run_cli("gate", out / "summary.json", "--policy", policy)
    assert regate.returncode == 3 and "audit incomplete" in regate.stderr


def test_an_unexpected_error_outside_checks_exits_3_not_1(tmp_path, digits_dir):
    """The clean pass is not optional: a model that raises on real batches stops the audit with exit 3 (never
    1, which means "gate failed"), one sentence on stderr and the traceback in OUT/crash.log (not errors.log:
    that belongs to a complete audit's set of files)."""
    torch.save(zoo.BatchLimited().state_dict(), tmp_path / "bl.pt")
    args = ["run", tmp_path / "bl.pt", digits_dir, "--arch", "tests.zoo:BatchLimited", "--num-classes", "10",
            "--limit", "40", "--out", tmp_path / "out", "--checks", "none"]
    proc = run_cli(*args)
    assert proc.returncode == 3, proc.stderr
    assert "unexpected ValueError: batch of 40 is over this model's limit of 16" in proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" in (tmp_path / "out" / "crash.log").read_text()
    assert not (tmp_path / "out" / "errors.log").exists()
    assert run_cli(*args, "--batch-size", "16").returncode == 0
    assert not (tmp_path / "out" / "crash.log").exists()  # the complete audit's files replaced the crash's log


def test_onnx_and_huggingface_run_from_the_command_line(tmp_path, digits, digits_dir, eager_model):
    x, y, _ = digits
    onnx_path = zoo.save_onnx(eager_model, tmp_path / "m.onnx", dynamic=True)
    out = tmp_path / "onnx-out"
    proc = run_cli("run", onnx_path, digits_dir, "--checks", "adversarial", "--limit", "20", "--out", out,
                   "--quiet", "--eps-linf", "0.1", "--norms", "linf")
    assert proc.returncode == 0, proc.stderr
    s = read_summary(out)
    assert s["model"]["format"] == "onnx" and s["model"]["fixed_batch_size"] is None
    assert s["model"]["input_shape"] == [1, 32, 32]
    folder = zoo.save_huggingface(tmp_path / "hf", x[:300], y[:300])
    proc = run_cli("run", folder, digits_dir, "--checks", "none", "--limit", "20", "--out", tmp_path / "hf-out",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    s = read_summary(tmp_path / "hf-out")
    assert s["model"]["format"] == "huggingface" and s["model"]["output_kind"] == "dict[logits]"
    assert s["model"]["preprocessing_from_file"] == {"mean": [0.5], "std": [0.5], "input_size": [32, 32]}


def test_an_onnx_operator_onnx2torch_cannot_convert_is_named(tmp_path, digits_dir, eager_model):
    # the traced x.view(x.size(0), -1) becomes Shape/Constant/Reshape nodes; at opset 19 onnx2torch has no
    # converter for them. With onnxruntime the audit goes on there (tests/test_query_models.py); without it,
    # the operator is named in one sentence.
    import subprocess
    import sys
    path = zoo.save_onnx(zoo.ViewCNN().eval(), tmp_path / "new.onnx", opset=19)
    argv = ["run", str(path), str(digits_dir), "--checks", "none", "--out", str(tmp_path / "out")]
    code = f"import sys; sys.modules['onnxruntime'] = None; from cnnaudit.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "onnx2torch cannot convert" in proc.stderr and "opset 19" in proc.stderr
    assert "install onnxruntime" in proc.stderr and "Traceback" not in proc.stderr


def test_help_lists_the_exit_codes():
    proc = run_cli("run", "--help")
    text = " ".join(proc.stdout.split())
    for code in ("0 pass", "1 gate failed", "2 bad input", "3 audit incomplete", "130 interrupted"):
        assert code in text


@pytest.mark.parametrize("blocked, args, extra", [
    ("onnx2torch", ["m.onnx"], "onnx"),
    ("timm", ["w.safetensors", "--arch", "timm:test_convnext", "--num-classes", "10"], "timm"),
    ("transformers", ["hf"], "hf"),
])
def test_a_missing_extra_is_named_with_its_pip_command(blocked, args, extra, tmp_path, digits_dir, eager_model):
    """The package is made unimportable in the child process (sys.modules[name] = None, Python's own way
    to block an import), as on a machine without the extra."""
    import subprocess
    import sys
    from safetensors.torch import save_file
    zoo.save_onnx(eager_model, tmp_path / "m.onnx")
    save_file({k: v.contiguous() for k, v in eager_model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    argv = ["run", str(tmp_path / args[0]), *args[1:], str(digits_dir), "--checks", "none", "--out",
            str(tmp_path / "out")]
    # onnx2torch missing but onnxruntime installed is an audit without gradients (test_query_models.py): both go
    blocks = "".join(f"sys.modules[{b!r}] = None; " for b in ([blocked, "onnxruntime"] if blocked == "onnx2torch"
                                                                 else [blocked]))
    code = f"import sys; {blocks}from cnnaudit.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"pip install 'cnnaudit[{extra}]'" in proc.stderr and "Traceback" not in proc.stderr
