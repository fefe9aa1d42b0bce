"""Every model format loads and gives the same predictions as the eager model it came from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import cnnaudit
from cnnaudit.demo import DigitsCNN
from cnnaudit.errors import AuditError


def audit(*args, **kwargs):
    """The clean evaluation only: these tests are about loading models and data, not about the checks."""
    return cnnaudit.audit(*args, checks=[], **kwargs)


def predictions(result):
    s = result.samples
    s = s[s["condition"] == "clean"].sort_values("sample_id")
    return s["prediction"].to_numpy(), s["confidence"].to_numpy()


@pytest.fixture(scope="module")
def eager_predictions(eager_model, digits_dir):
    return predictions(audit(eager_model, digits_dir, input_size=(32, 32)))


def test_eager_model_is_a_real_classifier(eager_predictions, digits_dir):
    result = audit(DigitsCNN(), digits_dir, input_size=(32, 32), channels=1)
    labels = result.samples.sort_values("sample_id")["label"].to_numpy()
    assert (eager_predictions[0] == labels).mean() > 0.85
    assert result.summary["clean"]["accuracy"] < 0.3  # an untrained twin is near chance


def test_torchscript_matches_eager(torchscript_path, digits_dir, eager_predictions):
    result = audit(torchscript_path, digits_dir)
    assert result.summary["model"]["format"] == "torchscript"
    assert result.summary["model"]["input_shape"] == [1, 32, 32]  # channels detected, size from the images
    pred, conf = predictions(result)
    np.testing.assert_array_equal(pred, eager_predictions[0])
    np.testing.assert_allclose(conf, eager_predictions[1], atol=1e-5)


def test_export_program_matches_eager(tmp_path, eager_model, digits_dir, eager_predictions):
    batch = torch.export.Dim("batch", min=1, max=4096)
    ep = torch.export.export(eager_model, (torch.zeros(2, 1, 32, 32),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(tmp_path / "model.pt2"))
    # torch.export.load unpickles (weights_only=False): a .pt2 can run code, so it needs the same consent
    with pytest.raises(AuditError, match="--unsafe-pickle") as err:
        audit(tmp_path / "model.pt2", digits_dir)
    assert "torch.export program" in str(err.value)
    result = audit(tmp_path / "model.pt2", digits_dir, unsafe_pickle=True)
    assert result.summary["model"]["format"] == "export"
    pred, conf = predictions(result)
    np.testing.assert_array_equal(pred, eager_predictions[0])
    np.testing.assert_allclose(conf, eager_predictions[1], atol=1e-5)


def test_state_dict_with_arch_matches_eager(tmp_path, eager_model, digits_dir, eager_predictions):
    # a training checkpoint as DDP writes it: nested and 'module.'-prefixed
    state = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in eager_model.state_dict().items()}}
    torch.save(state, tmp_path / "ckpt.pt")
    result = audit(tmp_path / "ckpt.pt", digits_dir, arch="cnnaudit.demo:DigitsCNN", num_classes=10)
    assert result.summary["model"]["format"] == "state_dict"
    pred, conf = predictions(result)
    np.testing.assert_array_equal(pred, eager_predictions[0])
    np.testing.assert_allclose(conf, eager_predictions[1], atol=1e-5)


def test_state_dict_without_arch_names_the_flag(tmp_path, eager_model, digits_dir):
    torch.save(eager_model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(AuditError, match="--arch"):
        audit(tmp_path / "sd.pt", digits_dir)


def test_wrong_num_classes_for_arch_is_explained(tmp_path, eager_model, digits_dir):
    torch.save(eager_model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(AuditError, match="do not fit --arch"):
        audit(tmp_path / "sd.pt", digits_dir, arch="cnnaudit.demo:DigitsCNN", num_classes=7)


def test_torchvision_arch_state_dict_matches_eager(tmp_path, digits_dir):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # grey input; keep resnet18's key names otherwise
    torch.save(net.state_dict(), tmp_path / "r18.pt")
    eager = predictions(audit(net, digits_dir, limit=40))
    # torchvision's factory builds a 3-channel conv1; the user's weights do not fit: a clear error
    with pytest.raises(AuditError, match="conv1"):
        audit(tmp_path / "r18.pt", digits_dir, arch="torchvision:resnet18", num_classes=10, limit=40)
    net3 = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(net3.state_dict(), tmp_path / "r18rgb.pt")
    eager3 = predictions(audit(net3, digits_dir, limit=40))
    loaded = audit(tmp_path / "r18rgb.pt", digits_dir, arch="torchvision:resnet18", num_classes=10, limit=40)
    assert loaded.summary["model"]["input_shape"] == [3, 32, 32]  # grey images expanded to the model's 3 channels
    np.testing.assert_array_equal(predictions(loaded)[0], eager3[0])
    assert len(eager[0]) == 40


def test_pickled_module_needs_unsafe_flag(tmp_path, eager_model, digits_dir, eager_predictions):
    torch.save(eager_model, tmp_path / "pickled.pt")
    with pytest.raises(AuditError, match="--unsafe-pickle") as err:
        audit(tmp_path / "pickled.pt", digits_dir)
    assert "runs code from the file" in str(err.value)
    result = audit(tmp_path / "pickled.pt", digits_dir, unsafe_pickle=True)
    assert result.summary["model"]["format"] == "pickle"
    np.testing.assert_array_equal(predictions(result)[0], eager_predictions[0])


def test_probability_outputs_are_detected_and_logged(eager_model, digits_dir, eager_predictions):
    softmax_model = nn.Sequential(eager_model, nn.Softmax(dim=1))
    result = audit(softmax_model, digits_dir)
    assert result.summary["model"]["outputs_probabilities"] is True
    assert any("probabilities" in f["title"] for f in result.summary["findings"])
    pred, conf = predictions(result)
    np.testing.assert_array_equal(pred, eager_predictions[0])
    np.testing.assert_allclose(conf, eager_predictions[1], atol=1e-4)
    # plain logits are not mistaken for probabilities
    assert audit(eager_model, digits_dir, limit=20).summary["model"]["outputs_probabilities"] is False


def test_normalization_happens_inside_the_wrapper(eager_model, digits_dir, eager_predictions):
    class ExpectsNormalized(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = eager_model

        def forward(self, z):  # trained on (x - 0.5) / 0.25
            return self.inner(z * 0.25 + 0.5)

    result = audit(ExpectsNormalized(), digits_dir, mean=[0.5], std=[0.25])
    np.testing.assert_array_equal(predictions(result)[0], eager_predictions[0])


def test_nan_model_is_rejected(digits_dir):
    class NaNModel(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 10), float("nan"))

    with pytest.raises(AuditError, match="NaN"):
        audit(NaNModel(), digits_dir, channels=1)
