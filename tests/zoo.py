"""A zoo of tiny real models in the shapes users bring: heads, containers, formats, dtypes, quirks.

Each is trained (or derived from a trained digits CNN) in seconds on scikit-learn's real handwritten
digits, so the audit's numbers mean something. Classes here are importable (`--arch tests.zoo:NAME`) so
the CLI can rebuild them from state dicts.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnaudit.demo import DigitsCNN, train_model, write_image_folder

BINARY_CLASSES = ["benign", "malignant"]  # digits 0-4 vs 5-9


def train(model: nn.Module, x: torch.Tensor, y: np.ndarray, *, epochs: int = 3, seed: int = 0) -> nn.Module:
    return train_model(x, y, seed=seed, epochs=epochs, model=model)


def binary_labels(y: np.ndarray) -> np.ndarray:
    return (y >= 5).astype(np.int64)


def write_binary_folder(root: Path, x, y, meta) -> Path:
    write_image_folder(root, x, binary_labels(y), meta.reset_index(drop=True), BINARY_CLASSES)
    return root


# --- heads and containers -------------------------------------------------------------------------------
class SingleLogit(nn.Module):
    """A BCE-style binary head: one logit for 'malignant', shape [N] or [N, 1]."""

    def __init__(self, two_logit: nn.Module, keepdim: bool = False, sigmoid: bool = False):
        super().__init__()
        self.inner, self.keepdim, self.sigmoid = two_logit, keepdim, sigmoid

    def forward(self, x):
        z = self.inner(x)
        out = z[:, 1] - z[:, 0]
        out = out[:, None] if self.keepdim else out
        return torch.sigmoid(out) if self.sigmoid else out


class DictOutput(nn.Module):
    """The Hugging Face convention: {"logits": ...}."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return {"logits": self.inner(x), "hidden": x.mean(dim=(1, 2, 3))}


class Output:
    """An object with a .logits attribute that is not a dict."""

    def __init__(self, logits):
        self.logits = logits


class AttributeOutput(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return Output(self.inner(x))


class TupleOutput(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x), x.flatten(1)


class Scaled(nn.Module):
    """The same decisions with logits multiplied by `factor`: softmax saturates, plain CE gradients vanish."""

    def __init__(self, inner: nn.Module, factor: float):
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x):
        return self.inner(x) * self.factor


class Forced(nn.Module):
    """`inner`, except on the listed images (matched to within PNG rounding), where it answers `forced`:
    a model whose changes from another are known image by image, to test paired statistics against."""

    def __init__(self, inner: nn.Module, images: torch.Tensor, forced: list[int], num_classes: int = 10):
        super().__init__()
        self.inner, self.num_classes = inner, num_classes
        self.register_buffer("images", images.flatten(1).clone())
        self.register_buffer("forced", torch.as_tensor(forced, dtype=torch.long))

    def forward(self, x):
        z = self.inner(x)
        if not len(self.images):
            return z
        dist = (x.flatten(1)[:, None] - self.images[None]).abs().amax(-1)  # [batch, listed]
        hit, which = dist.min(dim=1)
        hit = hit < 0.01
        onehot = F.one_hot(self.forced[which], self.num_classes).to(z.dtype) * 20
        return torch.where(hit[:, None], onehot, z)


class ViewCNN(nn.Module):
    """A third-party MNIST-style CNN: flattens with x.view(x.size(0), -1), which fails on an empty batch
    once traced (the traced graph cannot infer -1 from 0 elements)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 4)
        return self.fc(x.view(x.size(0), -1))


class Randomized(nn.Module):
    """Randomized at inference: Gaussian input noise and dropout that stays on."""

    def __init__(self, inner: nn.Module, sigma: float = 0.15):
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x):
        z = self.inner(x + self.sigma * torch.randn_like(x))
        return F.dropout(z, p=0.3, training=True)


class NonDifferentiable(nn.Module):
    """A model that leaves torch inside its forward (NumPy): predicts fine, cannot be differentiated, so a
    gradient attack raises. A realistic way for one check to fail while the others complete."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = DigitsCNN(num_classes=num_classes)

    def forward(self, x):
        x = torch.from_numpy(x.numpy().round(3))
        return self.net(x)


class BatchLimited(nn.Module):
    """A model that raises on batches larger than 16 (a model with a hard memory budget): the clean pass,
    which every check needs, fails outside any check."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = DigitsCNN(num_classes=num_classes)

    def forward(self, x):
        if x.shape[0] > 16:
            raise ValueError(f"batch of {x.shape[0]} is over this model's limit of 16")
        return self.net(x)


def train_augmented(x: torch.Tensor, y: np.ndarray, augment, *, epochs: int = 6, seed: int = 0) -> DigitsCNN:
    """A DigitsCNN trained with Adam on `augment(model, xb, yb, generator)` of each batch, seeded."""
    torch.manual_seed(seed)
    model = DigitsCNN().train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    yt, g = torch.from_numpy(y), torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            xb = augment(model, x[idx], yt[idx], g)
            opt.zero_grad()
            F.cross_entropy(model(xb), yt[idx]).backward()
            opt.step()
    return model.eval()


def adversarially_trained(x: torch.Tensor, y: np.ndarray, *, eps: float = 0.1, epochs: int = 6,
                          seed: int = 0) -> DigitsCNN:
    """A DigitsCNN trained on FGSM examples from a random start ("fast adversarial training", Wong, Rice &
    Kolter 2020: step 1.25 eps), L-inf budget `eps` on [0, 1] pixels: more robust at that budget."""
    def fgsm_rs(model, xb, yb, g):
        delta = ((torch.rand_like(xb) * 2 - 1) * eps).requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model((xb + delta).clamp(0, 1)), yb), delta)
        return (xb + (delta + 1.25 * eps * grad.sign()).clamp(-eps, eps)).clamp(0, 1).detach()
    return train_augmented(x, y, fgsm_rs, epochs=epochs, seed=seed)


def shift_augmented(x: torch.Tensor, y: np.ndarray, *, max_shift: int = 4, epochs: int = 6,
                    seed: int = 0) -> DigitsCNN:
    """A DigitsCNN trained on images shifted by a random whole number of pixels (up to `max_shift` per
    axis, the border filled like the image's: cnnaudit's own shift), the standard augmentation."""
    from cnnaudit.corruptions.geometry import shift

    def shifted(model, xb, yb, g):
        d = torch.randint(-max_shift, max_shift + 1, (len(xb), 2), generator=g)
        return shift(xb, d[:, 0], d[:, 1])
    return train_augmented(x, y, shifted, epochs=epochs, seed=seed)


class GlobalMax(nn.Module):
    """Ignores position by construction: a linear map of each channel's global maximum, a feature that
    whole-pixel shifts with a filled border keep (the brightest stroke stays in the frame)."""

    def __init__(self, channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)
        with torch.no_grad():  # bright images one way, dim (washed-out) ones another: varied answers
            self.fc.weight.copy_(torch.linspace(-4, 4, num_classes)[:, None].repeat(1, channels))
            self.fc.bias.copy_(-torch.linspace(-4, 4, num_classes) * 0.8)

    def forward(self, x):
        return self.fc(x.amax(dim=(2, 3)))


def widen(ten_class: DigitsCNN, num_classes: int) -> DigitsCNN:
    """A `num_classes`-way copy of a 10-class digits CNN: the extra classes exist but are never likely."""
    wide = DigitsCNN(num_classes=num_classes)
    wide.load_state_dict({k: v for k, v in ten_class.state_dict().items() if not k.startswith("classifier.3")},
                         strict=False)
    with torch.no_grad():
        last = ten_class.classifier[3]
        wide.classifier[3].weight.zero_()
        wide.classifier[3].bias.fill_(-30.0)
        wide.classifier[3].weight[:10] = last.weight
        wide.classifier[3].bias[:10] = last.bias
    return wide.eval()


# --- files in the formats users have ----------------------------------------------------------------------
def save_traced(model: nn.Module, path: Path, example: torch.Tensor) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, example), str(path))
    return path


def save_static_export(model: nn.Module, path: Path, batch: int) -> Path:
    """torch.export with every dimension static: the program accepts exactly `batch` images."""
    torch.export.save(torch.export.export(model, (torch.rand(batch, 1, 32, 32),)), str(path))
    return path


def save_onnx(model: nn.Module, path: Path, *, opset: int = 17, dynamic: bool = False) -> Path:
    """The legacy exporter (no onnxscript needed); a static batch of 1 unless `dynamic`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 1, 32, 32),), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}} if dynamic else None)
    return path


def save_timm_safetensors(path: Path, x, y, name: str = "test_convnext") -> Path:
    """A timm model's state dict in safetensors. test_convnext (layer norm): the batch-norm test models'
    running statistics do not settle in a few hundred steps, so in eval mode they are near chance."""
    import timm
    from safetensors.torch import save_file
    model = train(timm.create_model(name, pretrained=False, num_classes=10, in_chans=1), x, y, epochs=3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def save_huggingface(folder: Path, x, y) -> Path:
    """A tiny transformers ResNet image classifier with its preprocessor_config.json, as save_pretrained
    writes them. It was trained on (x - 0.5) / 0.5, which the preprocessor config declares."""
    from transformers import ResNetConfig, ResNetForImageClassification
    cfg = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10,
                       id2label={i: str(i) for i in range(10)}, label2id={str(i): i for i in range(10)})
    hf = ResNetForImageClassification(cfg)

    class Normalized(nn.Module):
        def __init__(self):
            super().__init__()
            self.hf = hf

        def forward(self, z):
            return self.hf((z - 0.5) / 0.5).logits

    train(Normalized(), x, y, epochs=4)
    hf.eval().save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ConvNextImageProcessor", "do_normalize": True, "image_mean": [0.5],
        "image_std": [0.5], "do_resize": True, "size": {"height": 32, "width": 32}}))
    return folder
