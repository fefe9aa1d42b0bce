"""TFLite files (query-only, float and full-integer quantized, resizable or not) and Keras 3 models (torch
backend, gradients), each made in the test from a tiny CNN trained on the 8 x 8 scikit-learn digits and
compared with its own framework's answers.

TensorFlow (the TFLite converter) is a test-only dependency, run in a subprocess (see CONVERTER) and never
imported here; the TFLite tests skip without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnaudit.errors import AuditError
from cnnaudit.model.keras import load_keras
from cnnaudit.model.loading import sha256_of
from cnnaudit.model.tflite import TFLiteQuery, interpreter_class, is_tflite, load_tflite
from cnnaudit.model.wrapper import build_audited_model

ROOT = Path(__file__).resolve().parents[1]
# Keras' own model.predict (the reference here) converts torch tensors with np.array(x, copy=False)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


class TinyCNN(nn.Sequential):
    """8 x 8 x 1 digits: one 3 x 3 convolution, a 2 x 2 max-pool and a linear head."""

    def __init__(self):
        super().__init__(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10))


@pytest.fixture(scope="module")
def digits8() -> tuple[torch.Tensor, np.ndarray]:
    """All 1,797 scikit-learn digits as N x 1 x 8 x 8 in [0, 1]."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0, d.target.astype(np.int64)


@pytest.fixture(scope="module")
def torch_cnn(digits8) -> TinyCNN:
    """Trained for three epochs (Adam, seeded): about 95% of the digits right."""
    x, y = digits8
    torch.manual_seed(0)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    labels, g = torch.from_numpy(y), torch.Generator().manual_seed(0)
    for _ in range(3):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), labels[idx]).backward()
            opt.step()
    return model.eval()


def _python(code: str, *args: str, **env) -> subprocess.CompletedProcess:
    """`python -c code args...` in a clean process (KERAS_BACKEND as this process had it before, unless given)."""
    clean = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**clean, **env})


def reference(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


# --- TFLite ------------------------------------------------------------------------------------------------

# TinyCNN in TensorFlow on NHWC tensors, converted by tf.lite.TFLiteConverter in a subprocess: in one process
# with torch, TensorFlow crashes (SIGSEGV) when torch._dynamo (and triton's LLVM) loads after it, which Keras'
# torch backend does. `layout="nchw"` takes [N, 1, 8, 8] and transposes inside; `constant_reshape` flattens to
# a constant [batch, 128], which makes the file refuse any other batch size; `quantize` is full-integer
# post-training quantization, calibrated on real digits.
CONVERTER = r"""
import json, sys
import numpy as np
import tensorflow as tf

jobs = json.loads(sys.argv[1])
w = np.load(sys.argv[2])
w1, b1, w2, b2 = (tf.constant(w[k]) for k in ("w1", "b1", "w2", "b2"))
calibration = w["calibration"]
for job in jobs:
    batch, layout, constant = job["batch"], job["layout"], job["constant_reshape"]
    shape = [batch, 8, 8, 1] if layout == "nhwc" else [batch, 1, 8, 8]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def forward(x):
        if layout == "nchw":
            x = tf.transpose(x, [0, 2, 3, 1])
        h = tf.nn.max_pool2d(tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME") + b1), 2, 2, "VALID")
        h = tf.reshape(h, [batch if constant else -1, 128])
        return tf.matmul(h, w2) + b2

    converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], forward)
    if job["quantize"]:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = getattr(tf, job["quantize"])
    with open(job["out"], "wb") as f:
        f.write(converter.convert())
"""

TFLITE_FILES = {  # name: (batch, layout, constant_reshape, quantize)
    "float": (None, "nhwc", False, None),
    "nchw": (None, "nchw", False, None),
    "int8": (None, "nhwc", False, "int8"),
    "uint8": (None, "nhwc", False, "uint8"),
    "fixed": (1, "nhwc", True, None),
}


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory, torch_cnn, digits8) -> dict[str, Path]:
    """TinyCNN's weights copied to TensorFlow's layouts (conv kernels to [kh, kw, in, out]; the linear layer's
    inputs reordered from torch's (c, h, w) flattening to TensorFlow's (h, w, c)) and converted to .tflite."""
    if importlib.util.find_spec("tensorflow") is None:  # not importorskip: importing it here is the crash
        pytest.skip("the TFLite converter needs tensorflow (pip install tensorflow-cpu)")
    folder = tmp_path_factory.mktemp("tflite")
    x, _ = digits8
    conv, linear = torch_cnn[0], torch_cnn[4]
    np.savez(folder / "weights.npz", w1=conv.weight.detach().numpy().transpose(2, 3, 1, 0),
             b1=conv.bias.detach().numpy(),
             w2=linear.weight.detach().reshape(10, 8, 4, 4).permute(2, 3, 1, 0).reshape(128, 10).numpy(),
             b2=linear.bias.detach().numpy(),
             calibration=x[::9].permute(0, 2, 3, 1).contiguous().numpy())  # 200 digits, NHWC
    paths = {name: folder / f"{name}.tflite" for name in TFLITE_FILES}
    jobs = [{"out": str(paths[name]), "batch": batch, "layout": layout, "constant_reshape": constant,
             "quantize": quantize} for name, (batch, layout, constant, quantize) in TFLITE_FILES.items()]
    done = _python(CONVERTER, json.dumps(jobs), str(folder / "weights.npz"), TF_CPP_MIN_LOG_LEVEL="2")
    assert done.returncode == 0, done.stderr[-3000:]
    return paths


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_a_float_tflite_file_gives_the_torch_models_scores_at_any_batch_size(tflite_files, torch_cnn, digits8,
                                                                          layout):
    """The converted file takes [N, 8, 8, 1] (or [N, 1, 8, 8]) with a dynamic batch (shape [1, ...], signature
    -1): its layout is read from the shape, and batches of 1, 5 and 64 fed NCHW through the loaded module
    (resized to each new size, in any order) equal the torch model's scores."""
    path = tflite_files["float" if layout == "nhwc" else "nchw"]
    assert is_tflite(path) and not is_tflite(Path(__file__))
    loaded = load_tflite(path, sha256_of(path))
    assert (loaded.format, loaded.gradients, loaded.supports_hooks, loaded.layout) == ("tflite", False, False, layout)
    assert loaded.batch_hint is None  # resizable: the audit picks its own batch size
    assert loaded.preprocessing == {"channels": 1, "input_size": (8, 8)}
    assert loaded.backend["runtime"] == "ai-edge-litert"
    assert loaded.backend["input"]["dtype"] == "float32" and loaded.backend["input"]["quantization"] is None
    assert loaded.backend["input"]["shape"] == ([None, 8, 8, 1] if layout == "nhwc" else [None, 1, 8, 8])
    x, _ = digits8
    for n in (1, 5, 64, 5, 1):
        out = loaded.module(x[:n])
        assert out.shape == (n, 10) and out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), reference(torch_cnn, x[:n]), atol=1e-4)
    assert (loaded.module.images, loaded.module.calls) == (76, 5)  # the audit's query count


def test_full_integer_quantized_tflite_files_agree_with_the_float_model(tflite_files, digits8):
    """int8 and uint8 post-training quantization: the audit's float images are quantized with the input's
    scale and zero point, the scores dequantized, and top-1 agrees with the float file on >= 95% of the
    1,797 digits."""
    x, y = digits8
    float_model = load_tflite(tflite_files["float"], "")
    expected = float_model.module(x).argmax(1).numpy()
    for kind, dtype in (("int8", "int8"), ("uint8", "uint8")):
        loaded = load_tflite(tflite_files[kind], "")
        inp = loaded.backend["input"]
        assert inp["dtype"] == dtype and inp["quantization"]["scale"] > 0, inp
        assert loaded.backend["output"]["quantization"]["scale"] > 0
        assert any("quantized" in note for note in loaded.notes)
        scores = torch.cat([loaded.module(chunk) for chunk in x.split(256)])
        assert scores.dtype == torch.float32
        agreement = (scores.argmax(1).numpy() == expected).mean()
        assert agreement >= 0.95, (kind, agreement)
        assert (scores.argmax(1).numpy() == y).mean() >= 0.9  # and the quantized model still reads digits


def test_a_tflite_file_that_refuses_another_batch_size_runs_one_batch_at_a_time(tflite_files, torch_cnn, digits8):
    """A file built for batch 1 whose reshape has the constant shape [1, 128] allocates at batch 2 but fails at
    its first run: the load finds out once, batch_hint is 1, and any batch is answered image by image."""
    path = tflite_files["fixed"]
    loaded = load_tflite(path, sha256_of(path))
    assert loaded.batch_hint == 1 and loaded.backend["fixed_batch_size"] == 1
    assert any("batch size of 1" in note for note in loaded.notes)
    x, _ = digits8
    np.testing.assert_allclose(loaded.module(x[:7]).numpy(), reference(torch_cnn, x[:7]), atol=1e-4)
    audited, num_classes = build_audited_model(loaded.module, channels=None, input_size=(8, 8), mean=None,
                                               std=None, device=torch.device("cpu"),
                                               batch_hint=loaded.batch_hint)
    assert num_classes == 10 and audited.channels == 1
    np.testing.assert_allclose(audited(x[:3]).numpy(), reference(torch_cnn, x[:3]), atol=1e-4)


def test_the_tflite_query_is_thread_safe(tflite_files, torch_cnn, digits8):
    """Interpreters are not thread-safe: calls from four threads at four batch sizes all get their own scores."""
    from concurrent.futures import ThreadPoolExecutor
    backend = TFLiteQuery(tflite_files["float"])
    x, _ = digits8
    batches = [x[i:i + n] for i, n in zip(range(0, 400, 50), (1, 7, 32, 3, 1, 7, 32, 3))]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda b: backend.predict(b.permute(0, 2, 3, 1).contiguous().numpy()), batches))
    for b, out in zip(batches, outs):
        np.testing.assert_allclose(out, reference(torch_cnn, b), atol=1e-4)


def test_a_file_that_is_not_tflite_is_refused_in_one_sentence(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(AuditError, match=r"model\.tflite.*not a readable TFLite model.*TFLiteConverter"):
        load_tflite(path, sha256_of(path))


def test_without_a_tflite_runtime_the_error_names_the_extra(monkeypatch):
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter",
                 "tensorflow", "tensorflow.lite"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: the import raises ImportError
    with pytest.raises(AuditError, match=r"pip install 'cnnaudit\[tflite\]'"):
        interpreter_class()


# --- Keras 3 -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras():
    """Keras on torch: the backend is fixed at the first import, so KERAS_BACKEND is set before it."""
    from cnnaudit.model.keras import import_keras
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_BACKEND", "torch")
        return import_keras()


def _keras_cnn(keras, *extra_layers):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                             keras.layers.Flatten(), *extra_layers, keras.layers.Dense(10)])


def test_a_keras_model_runs_in_torch_with_gradients(keras, tmp_path, digits8):
    """A .keras file loads as a torch module (Keras' torch backend): fed NCHW, it equals Keras' own predict on
    the NHWC images, gradients reach the NCHW input, its weights are torch parameters, and the audit's
    wrapper probes it. A file named without the .keras extension loads the same (its contents say zip)."""
    model = _keras_cnn(keras)
    path = tmp_path / "cnn.keras"
    model.save(path)
    loaded = load_keras(path, sha256_of(path))
    assert (loaded.format, loaded.gradients, loaded.supports_hooks, loaded.layout) == ("keras", True, False, "nhwc")
    assert loaded.preprocessing == {"channels": 1, "input_size": (8, 8)} and loaded.batch_hint is None
    # the Keras variables' own tensors are the module's parameters (conv and dense kernels and biases), so
    # .to(device) moves the tensors Keras computes with
    keras_model = loaded.module.inner.model
    assert {id(p) for p in loaded.module.parameters()} == {id(v.value) for v in keras_model.weights}
    assert len(keras_model.weights) == 4
    x, _ = digits8
    x = x[:16].clone().requires_grad_(True)
    out = loaded.module(x)
    assert isinstance(out, torch.Tensor) and out.shape == (16, 10)
    expected = model.predict(x.detach().permute(0, 2, 3, 1).numpy(), verbose=0)
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-5)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0

    renamed = tmp_path / "cnn.bin"
    renamed.write_bytes(path.read_bytes())
    again = load_keras(renamed, sha256_of(renamed))
    with torch.no_grad():
        np.testing.assert_allclose(again.module(x).numpy(), expected, atol=1e-5)
        audited, num_classes = build_audited_model(again.module.to("cpu"), channels=None, input_size=(8, 8),
                                                   mean=None, std=None, device=torch.device("cpu"))
        assert num_classes == 10 and audited.channels == 1
        np.testing.assert_allclose(audited(x).numpy(), expected, atol=1e-5)


def test_a_plain_legacy_h5_file_loads(keras, tmp_path, digits8):
    model = _keras_cnn(keras)
    path = tmp_path / "cnn.h5"
    model.save(path)
    loaded = load_keras(path, sha256_of(path))
    assert (loaded.format, loaded.layout) == ("keras_h5", "nhwc")
    x, _ = digits8
    with torch.no_grad():
        out = loaded.module(x[:8]).numpy()
    np.testing.assert_allclose(out, model.predict(x[:8].permute(0, 2, 3, 1).numpy(), verbose=0), atol=1e-5)


def test_keras_files_with_custom_objects_or_python_code_are_refused(keras, tmp_path):
    """The custom layer is registered in this very process, so Keras itself would load it: the refusal is
    cnnaudit's, from the file's config, before Keras runs anything. A Lambda layer (Python code) likewise."""

    @keras.saving.register_keras_serializable(package="cnnaudit_test")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    custom = _keras_cnn(keras, Doubler())
    for name in ("custom.h5", "custom.keras"):
        path = tmp_path / name
        custom.save(path)
        assert keras.saving.load_model(path, compile=False) is not None  # Keras would run the class
        with pytest.raises(AuditError, match=rf"{name}.*custom object 'cnnaudit_test>Doubler'.*ONNX"):
            load_keras(path, sha256_of(path))

    inputs = keras.Input((8, 8, 1))
    doubled = keras.layers.Lambda(lambda t: t * 2)(inputs)
    lam = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(doubled)))
    for name in ("lambda.h5", "lambda.keras"):
        path = tmp_path / name
        lam.save(path)
        with pytest.raises(AuditError, match=rf"{name}.*Lambda layer.*never runs"):
            load_keras(path, sha256_of(path))


def test_files_that_are_not_keras_models_are_refused(keras, tmp_path):
    weights = tmp_path / "cnn.weights.h5"
    _keras_cnn(keras).save_weights(weights)
    with pytest.raises(AuditError, match=r"without a model config.*model\.save"):
        load_keras(weights, "")
    other = tmp_path / "notes.keras"
    other.write_text("hello")
    with pytest.raises(AuditError, match=r"neither a Keras 3 \.keras file nor an HDF5"):
        load_keras(other, "")


def test_keras_and_the_tflite_runtime_are_not_imported_with_cnnaudit():
    """The extras are optional: importing cnnaudit and its loaders imports neither Keras nor a TFLite runtime."""
    done = _python("import sys, cnnaudit, cnnaudit.model.loading, cnnaudit.model.keras, cnnaudit.model.tflite\n"
                   "print(sorted(m for m in ('keras', 'tensorflow', 'ai_edge_litert', 'tflite_runtime') "
                   "if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_keras_on_another_backend_is_refused(tmp_path):
    """Keras' backend cannot change once imported: a process whose Keras runs on TensorFlow, or whose
    KERAS_BACKEND names a backend that is not installed, gets one sentence naming KERAS_BACKEND=torch; with
    KERAS_BACKEND unset, cnnaudit picks torch itself."""
    code = ("from cnnaudit.errors import AuditError\nfrom cnnaudit.model.keras import import_keras\n"
            "try:\n    print(import_keras().backend.backend())\nexcept AuditError as e:\n    print(e)\n")
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("needs tensorflow, Keras' other backend")
    tf_backend = _python(code, KERAS_BACKEND="tensorflow")
    assert tf_backend.returncode == 0, tf_backend.stderr
    assert "runs with the tensorflow backend" in tf_backend.stdout and "KERAS_BACKEND=torch" in tf_backend.stdout
    missing = _python(code, KERAS_BACKEND="no-such-backend")
    assert missing.returncode == 0, missing.stderr
    assert "KERAS_BACKEND=torch" in missing.stdout, missing.stdout
    unset = _python(code)
    assert unset.returncode == 0, unset.stderr
    assert unset.stdout.strip().endswith("torch")


# --- from the command line, with the default checks -------------------------------------------------------
@pytest.fixture(scope="module")
def digits8_dir(tmp_path_factory, digits8) -> Path:
    """The last 300 digits (8 x 8) as DATA/<class>/<image>.png."""
    import pandas as pd

    from cnnaudit.demo import write_image_folder
    x, y = digits8
    root = tmp_path_factory.mktemp("digits8") / "data"
    write_image_folder(root, x[-300:], y[-300:], pd.DataFrame(index=range(300)), [str(d) for d in range(10)])
    return root


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_an_int8_tflite_file_is_audited_with_the_default_checks_and_nothing_on_the_terminal(tflite_files, digits8_dir,
                                                                                          tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "cnnaudit", "run", str(tflite_files["int8"]), str(digits8_dir),
                           "--out", str(out), "--quiet", "--limit", "100", "--norms", "linf", "--eps-linf", "8/255"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # LiteRT's C++ "Created TensorFlow Lite XNNPACK delegate" line included
    s = _summary(out)
    assert s["complete"] and s["model"]["format"] == "tflite" and s["model"]["gradients"] is False
    assert s["model"]["layout"] == "nhwc" and s["model"]["input_shape"] == [1, 8, 8]
    assert s["clean"]["accuracy"] > 0.85 and s["adversarial"]["threat_model"] == "query_only"


@pytest.mark.slow
def test_a_keras_file_is_attacked_with_gradients_from_the_command_line(keras, tmp_path, digits8, digits8_dir):
    model = _keras_cnn(keras)
    x, y = digits8
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1400].permute(0, 2, 3, 1).numpy(), y[:1400], epochs=5, batch_size=64, verbose=0)
    model.save(tmp_path / "cnn.keras")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "cnnaudit", "run", str(tmp_path / "cnn.keras"), str(digits8_dir),
                           "--out", str(out), "--quiet", "--limit", "100", "--checks", "adversarial", "--norms",
                           "linf", "--eps-linf", "2/255,8/255"], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"})
    assert proc.returncode == 0, proc.stderr
    s = _summary(out)
    assert s["model"]["format"] == "keras" and s["model"]["gradients"] is True and s["clean"]["accuracy"] > 0.8
    a = s["adversarial"]
    assert a["threat_model"] == "gradients" and "pgd" in a["cascade"] and a["gradient_masking"] == "none"
    fgsm = {r["eps_label"]: r["robust_accuracy"] for r in a["results"] if r["attack"] == "fgsm"}
    worst = {r["eps_label"]: r["robust_accuracy"] for r in a["results"] if r["attack"] == "worst_case"}
    assert worst["8/255"] <= fgsm["8/255"] and worst["8/255"] < s["clean"]["accuracy"]
