"""Models from outside PyTorch and models that only answer queries (issue 29): ONNX files as other exporters
write them (weights in Constant nodes, channels-last input, graphs onnx2torch cannot convert), onnxruntime,
`--query-only`, `--model-fn`, and a live Open Inference Protocol endpoint (a real MLServer on 127.0.0.1)
audited end to end from the command line."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import cnnaudit
from cnnaudit.demo import write_image_folder
from cnnaudit.model.onnxfile import fold_constants
from tests import zoo
from tests.conftest import CLASSES, read_summary, run_cli


def paddle_style(src, dst):
    """What Paddle2ONNX writes: every weight a Constant node in the graph, no initializers."""
    import onnx
    proto = onnx.load(str(src))
    consts = [onnx.helper.make_node("Constant", [], [i.name], value=i) for i in proto.graph.initializer]
    del proto.graph.initializer[:]
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(consts + nodes)
    onnx.save(proto, str(dst))
    return dst


class ChannelsLastInput(nn.Module):
    """The network tf2onnx exports from Keras: it takes [N, H, W, C]."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.permute(0, 3, 1, 2))


def save_nhwc_onnx(model: nn.Module, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ChannelsLastInput(model), (torch.rand(1, 32, 32, 1),), str(path), dynamo=False,
                          opset_version=13, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return path


def predictions(out) -> pd.Series:
    rows = pd.read_csv(out / "samples.csv")
    rows = rows[rows["condition"] == "clean"]
    return rows.set_index("sample_id")["prediction"].astype(int).sort_index()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, eager_model, digits_dir):
    """The eager model's own clean predictions on 60 images: what every other form of it must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "out"
    cnnaudit.audit(eager_model, digits_dir, checks=[], limit=60, quiet=True).write(out)
    return predictions(out)


def test_weights_in_constant_nodes_are_folded_and_match_the_eager_model(tmp_path, eager_model, digits_dir, reference):
    import onnx
    from onnx2torch import convert
    path = paddle_style(zoo.save_onnx(eager_model, tmp_path / "m.onnx", opset=11, dynamic=True), tmp_path / "p.onnx")
    with pytest.raises(KeyError):  # what a user got before: onnx2torch reads initializers only
        convert(onnx.load(str(path)))
    proto = onnx.load(str(path))
    assert fold_constants(proto.graph) == 8 and not any(n.op_type == "Constant" for n in proto.graph.node)
    out = tmp_path / "out"
    proc = run_cli("run", path, digits_dir, "--checks", "none", "--limit", "60", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    s = read_summary(out)
    assert s["model"]["gradients"] is True and s["model"]["layout"] == "nchw"
    assert any("8 Constant or Identity node(s)" in n for n in s["model"]["notes"])
    pd.testing.assert_series_equal(predictions(out), reference)
    # onnxruntime, the reference runtime, reads the same file to the same predictions
    proc = run_cli("run", path, digits_dir, "--limit", "60", "--out", tmp_path / "ort", "--quiet", "--query-only",
                   "--norms", "linf", "--eps-linf", "8/255")  # every default check, without gradients
    assert proc.returncode == 0, proc.stderr
    s = read_summary(tmp_path / "ort")
    assert s["model"]["gradients"] is False and s["model"]["backend"]["runtime"] == "onnxruntime"
    assert s["model"]["queries"]["images"] >= 60 and s["complete"]
    assert s["adversarial"]["threat_model"] == "query_only"
    pd.testing.assert_series_equal(predictions(tmp_path / "ort"), reference)


def test_a_channels_last_onnx_export_is_read_as_nhwc(tmp_path, eager_model, digits_dir, reference):
    path = save_nhwc_onnx(eager_model, tmp_path / "nhwc.onnx")
    out = tmp_path / "out"
    proc = run_cli("run", path, digits_dir, "--checks", "none", "--limit", "60", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    s = read_summary(out)
    assert s["model"]["layout"] == "nhwc" and s["model"]["input_shape"] == [1, 32, 32]
    assert s["model"]["gradients"] is True  # onnx2torch converted it: a permute in front, gradients flow
    pd.testing.assert_series_equal(predictions(out), reference)
    proc = run_cli("run", path, digits_dir, "--checks", "none", "--limit", "60", "--out", tmp_path / "bad",
                   "--layout", "nchw")  # the override is obeyed, and a wrong one fails in one sentence
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--input-size and --channels" in proc.stderr


def test_a_graph_onnx2torch_cannot_convert_runs_in_onnxruntime_query_only(tmp_path, digits_dir):
    """ViewCNN at opset 19: onnx2torch has no converter for its Shape/Reshape nodes. The audit goes on in
    onnxruntime, says so, attacks with Square alone and never counts the gradient checks as passed; a
    min_robust_accuracy rule cannot pass on an upper bound."""
    path = zoo.save_onnx(zoo.ViewCNN().eval(), tmp_path / "new.onnx", opset=19)
    policy = tmp_path / "gate.toml"
    policy.write_text('[[rule]]\nname = "robust"\nkind = "min_robust_accuracy"\nnorm = "linf"\neps = "8/255"\n'
                      'threshold = 0.0\n')
    out = tmp_path / "out"
    proc = run_cli("run", path, digits_dir, "--checks", "adversarial", "--limit", "24", "--out", out,
                   "--eps-linf", "8/255", "--norms", "linf", "--policy", policy)
    assert proc.returncode == 1, proc.stderr  # the rule: no pass without evidence
    assert "onnx2torch cannot convert the operator" in proc.stderr and "onnxruntime" in proc.stderr
    s = read_summary(out)
    assert s["model"]["gradients"] is False and s["model"]["backend"]["runtime"] == "onnxruntime"
    a = s["adversarial"]
    assert a["threat_model"] == "query_only" and a["gradient_masking"] == "not_applicable"
    assert a["cascade"] == ["square"] and a["square"]["queries"] == 1000
    assert [r["attack"] for r in a["results"]] == ["worst_case"]  # no FGSM without gradients
    gradient_checks = [c for c in a["sanity"] if not c["check"].startswith("monotone")]
    assert gradient_checks and all(c["passed"] is None and c["applicable"] is False for c in gradient_checks)
    assert any(f["subject"] == "query-only" for f in s["findings"])
    assert "upper bound from Square with 1000 queries" in s["gate"]["rules"][0]["detail"]
    assert not s["gate"]["passed"]
    html = (out / "report.html").read_text()
    assert "Query-only model: robust accuracy is an upper bound" in html and "not applicable" in html


def test_converter_warnings_become_notes_not_terminal_lines(tmp_path, digits_dir):
    """A Resize in nearest mode with ONNX's default rounding: onnx2torch warns that its results may differ.
    The warning is counted into summary.model.notes; nothing reaches the terminal under --quiet, and the
    conversion is checked against onnxruntime before it is trusted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    g = np.random.default_rng(0)
    w = numpy_helper.from_array(g.normal(0, 0.05, (10, 1 * 64 * 64)).astype(np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    shape = numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape")
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("Reshape", ["up", "shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
                              initializer=[w, scales, shape])
    path = tmp_path / "resize.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    out = tmp_path / "out"
    proc = run_cli("run", path, digits_dir, "--checks", "none", "--limit", "40", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "warn" not in proc.stderr.lower()
    notes = read_summary(out)["model"]["notes"]
    assert any("converter warned" in n and "nearest" in n for n in notes), notes


def test_query_only_keeps_every_prediction_and_bounds_the_white_box_attack(eager_model, digits_dir):
    """--query-only on a torch model: the same clean rows, and Square's robust accuracy is at least the white-box
    cascade's (an upper bound, as the report says)."""
    opts = {"checks": ["adversarial"], "limit": 40, "quiet": True,
            "adversarial": {"eps": {"linf": [4 / 255]}, "norms": ["linf"]}}
    white = cnnaudit.audit(eager_model, digits_dir, **opts).summary
    query = cnnaudit.audit(eager_model, digits_dir, query_only=True, **opts).summary
    assert query["clean"]["accuracy"] == white["clean"]["accuracy"]
    assert query["model"]["gradients"] is False and white["model"]["gradients"] is True
    w = next(r for r in white["adversarial"]["results"] if r["attack"] == "worst_case")
    q = next(r for r in query["adversarial"]["results"] if r["attack"] == "worst_case")
    assert q["robust_accuracy"] >= w["robust_accuracy"]
    assert white["adversarial"]["threat_model"] == "gradients"
    assert query["model"]["queries"]["images"] > 1000  # Square's queries are counted


def test_a_python_function_is_audited_with_model_fn(tmp_path, eager_model, digits_dir, reference):
    torch.save(eager_model.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "mymodel.py").write_text(
        "import numpy as np, torch\n"
        "from cnnaudit.demo import DigitsCNN\n"
        "_net = DigitsCNN()\n"
        f"_net.load_state_dict(torch.load({str(tmp_path / 'weights.pt')!r}))\n"
        "_net.eval()\n"
        "def predict(batch):\n"
        "    assert isinstance(batch, np.ndarray) and batch.dtype == np.float32 and batch.ndim == 4\n"
        "    with torch.no_grad():\n"
        "        return _net(torch.from_numpy(batch)).numpy()\n")
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(tmp_path)}
    proc = run_cli("run", "--model-fn", "mymodel:predict", digits_dir, "--checks", "none", "--limit", "60",
                   "--out", out, "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    s = read_summary(out)
    assert s["model"]["format"] == "callable" and s["model"]["backend"] == {"function": "mymodel:predict"}
    pd.testing.assert_series_equal(predictions(out), reference)
    proc = run_cli("run", "--model-fn", "mymodel:nope", digits_dir, "--out", tmp_path / "x", env=env)
    assert proc.returncode == 2 and "cannot import 'nope' from 'mymodel'" in proc.stderr
    proc = run_cli("run", "--model-fn", "mymodel:predict", "model.pt", digits_dir, "--out", tmp_path / "x", env=env)
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr  # MODEL and --model-fn: one too many


# --- a live Open Inference Protocol endpoint ----------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory, digits):
    """A real MLServer on 127.0.0.1 serving a small CNN trained on the digits (32 x 32), and the same model in
    memory; a second copy fails permanently on any batch holding a pixel of exactly 1.0."""
    from tests.oip_server import Model, TinyCNN, start_mlserver
    x, y, _ = digits
    torch.manual_seed(0)
    net = zoo.train(TinyCNN(channels=1, size=32), x[:1000], y[:1000], epochs=3).eval()
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    server = start_mlserver(tmp_path_factory.mktemp("mlserver"), [
        Model("digits", weights, size=32), Model("poisoned", weights, size=32, extra={"sentinel": 1.0})])
    yield server, net
    server.stop()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.mark.slow
def test_a_live_endpoint_is_audited_end_to_end_with_the_default_checks(tmp_path, served, digits_dir):
    server, net = served
    out = tmp_path / "out"
    env = {"OIP_TOKEN": "Bearer t0ken-never-logged"}
    proc = run_cli("run", server.url("digits"), digits_dir, "--limit", "60", "--out", out, "--norms", "linf",
                   "--eps-linf", "8/255", "--header", "Authorization=OIP_TOKEN", "--request-batch", "16", env=env)
    assert proc.returncode == 0, proc.stderr
    s = read_summary(out)
    assert s["complete"] and s["model"]["format"] == "endpoint" and s["model"]["gradients"] is False
    assert s["model"]["backend"]["headers"] == ["Authorization"] and s["model"]["input_shape"] == [1, 32, 32]
    q = s["model"]["queries"]
    assert q["requests"] >= q["calls"] > 0 and q["failed_requests"] == 0
    for name in ("corruption", "shift", "subgroups", "shortcuts", "label_issues", "adversarial"):
        assert name in s and not s[name].get("failed"), name
    assert s["adversarial"]["threat_model"] == "query_only"
    assert s["shortcuts"]["saliency"]["method"] == "occlusion" if "saliency" in s["shortcuts"] else True
    # the endpoint's answers are the in-process model's: the same clean predictions
    local = tmp_path / "local"
    cnnaudit.audit(net, digits_dir, checks=[], limit=60, quiet=True).write(local)
    pd.testing.assert_series_equal(predictions(out), predictions(local))
    for f in out.iterdir():  # the token is in no output
        if f.is_file():
            assert "t0ken-never-logged" not in f.read_text(errors="replace"), f.name
    assert "t0ken-never-logged" not in proc.stderr + proc.stdout


def test_images_an_endpoint_always_fails_on_are_listed_not_dropped(tmp_path, served, digits):
    """Two images hold a pixel of exactly 1.0, on which the 'poisoned' model fails (HTTP 500) every time: their
    batch is retried, then sent one image at a time, and those two are listed as failed; the rest is audited."""
    server, _ = served
    x, y, meta = digits
    idx = np.arange(1300, 1340)
    imgs = x[idx].clone() * 0.9  # no pixel reaches 255 ...
    imgs[[5, 17], :, 0, 0] = 1.0  # ... except one in two images
    root = tmp_path / "data"
    write_image_folder(root, imgs, y[idx], meta.iloc[idx].reset_index(drop=True), CLASSES)
    out = tmp_path / "out"
    url = server.url("poisoned").replace("http://", "http://alice:pa55word@") + "?key=qs3cret"
    proc = run_cli("run", url, root, "--checks", "none", "--out", out, "--quiet", "--request-retries", "1")
    assert proc.returncode == 0, proc.stderr
    s = read_summary(out)
    assert s["data"]["n_samples"] == 38 and s["data"]["n_skipped"] == 2
    assert all("the model failed on it" in r["reason"] and "HTTP 500" in r["reason"] for r in s["data"]["skipped"])
    assert s["model"]["queries"]["retried"] >= 1
    (warning,) = [f for f in s["findings"] if f["subject"] == "model failures"]
    k = round(s["clean"]["accuracy"] * 38)
    assert f"{100 * k / 40:.1f}% with those counted as errors" in warning["title"]
    for f in out.iterdir():  # the URL's password and query are in no output: the path is the cleaned URL
        text = f.read_text(errors="replace")
        assert "pa55word" not in text and "qs3cret" not in text, f.name
    assert s["model"]["path"] == server.url("poisoned")


def test_a_header_given_its_value_instead_of_a_variable_never_echoes_it():
    from cnnaudit.errors import AuditError
    from cnnaudit.model.sources import resolve_headers
    with pytest.raises(AuditError) as err:
        resolve_headers(["Authorization=Bearer zz-secret-tok"])
    assert "zz-secret-tok" not in str(err.value) and "name of an environment variable" in str(err.value)


def test_identical_weights_exported_as_identity_nodes_are_folded(tmp_path):
    """torch's exporter writes identical initializers once (here two zero biases, as in any fresh network with
    batch norm folded) and the copy as an Identity node, which onnx2torch cannot read: a ResNet-18 exported at
    random initialization failed so. Folded, it converts, with gradients, and agrees with onnxruntime."""
    import onnx
    from onnx2torch import convert

    from cnnaudit.model.onnxfile import OnnxRuntimeQuery, load_onnx
    from cnnaudit.model.query import QueryModule
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 32 * 32, 10)).eval()
    with torch.no_grad():
        net[0].bias.zero_()
        net[2].bias.zero_()
    path = zoo.save_onnx(net, tmp_path / "tied.onnx", dynamic=True)
    proto = onnx.load(str(path))
    assert any(n.op_type == "Identity" for n in proto.graph.node)
    with pytest.raises(KeyError):
        convert(proto)
    loaded = load_onnx(path, "")
    assert loaded.gradients and loaded.notes
    x = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = loaded.module(x)
    ref = QueryModule(OnnxRuntimeQuery(str(path), "nchw", str(path)))(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, net(x), atol=1e-5, rtol=1e-5)
