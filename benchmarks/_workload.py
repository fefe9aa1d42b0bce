"""Shared benchmark workload: the demo's digits CNN and an audit split written to disk."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from cnnaudit.demo import digits_images, train_model, write_image_folder


def digits_workload(n_eval: int, *, epochs: int = 12, root: Path | None = None):
    """(eager model, data folder) with `n_eval` held-out digits; trains in a few seconds."""
    x, y, meta = digits_images(seed=0)
    perm = np.random.default_rng(0).permutation(len(y))
    train, held = perm[:1100], np.sort(perm[1100:1100 + n_eval])
    model = train_model(x[train], y[train], epochs=epochs)
    root = Path(root or tempfile.mkdtemp(prefix="cnnaudit-bench-")) / "data"
    write_image_folder(root, x[held], y[held], meta.iloc[held].reset_index(drop=True), [str(i) for i in range(10)])
    return model, root


def resnet_workload(n_eval: int, *, size: int = 32, epochs: int = 8, root: Path | None = None):
    """(torchvision ResNet-18, data folder) with `n_eval` digits audited at `size` px, 3 channels.

    At 32 px the network is trained end to end on the other digits (about a minute on 2 cores). At 224 px
    that would take an hour on a CPU, so the convolutional layers keep their random weights, batch-norm
    statistics are re-estimated on the training images and only the last layer is fitted (a linear
    probe): the passes cost what a trained ResNet-18's cost, and the model is right often enough for the
    attack cascade to have work."""
    import torch
    import torch.nn.functional as F
    from torchvision.models import resnet18

    x, y, meta = digits_images(seed=0)
    perm = np.random.default_rng(0).permutation(len(y))
    held = np.sort(perm[:n_eval])
    train = perm[n_eval:] if len(perm) - n_eval >= 500 else perm[-800:]
    torch.manual_seed(0)
    model = resnet18(num_classes=10)

    def inputs(idx):
        xs = x[idx].expand(-1, 3, -1, -1)
        return xs if size == 32 else F.interpolate(xs, size=(size, size), mode="bilinear", align_corners=False)

    yt = torch.from_numpy(y)
    g = torch.Generator().manual_seed(0)
    if size == 32:
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        model.train()
        for _ in range(epochs):
            for idx in torch.from_numpy(train)[torch.randperm(len(train), generator=g)].split(64):
                opt.zero_grad()
                F.cross_entropy(model(inputs(idx)), yt[idx]).backward()
                opt.step()
    else:
        for m in model.modules():  # cumulative batch-norm statistics over the training images
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        body = torch.nn.Sequential(*list(model.children())[:-1])
        with torch.no_grad():
            for idx in torch.from_numpy(train).split(32):
                body(inputs(idx))
        model.eval()
        with torch.no_grad():
            feats = torch.cat([body(inputs(idx)).flatten(1) for idx in torch.from_numpy(train).split(32)])
        from sklearn.linear_model import LogisticRegression
        mu, sd = feats.mean(0), feats.std(0) + 1e-6
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(((feats - mu) / sd).numpy(), y[train])
        w = torch.as_tensor(clf.coef_, dtype=torch.float32) / sd
        with torch.no_grad():  # fold the standardisation into the fc layer
            model.fc.weight.copy_(w)
            model.fc.bias.copy_(torch.as_tensor(clf.intercept_, dtype=torch.float32) - (w * mu).sum(1))
    model.eval()
    root = Path(root or tempfile.mkdtemp(prefix="cnnaudit-bench-")) / "data"
    write_image_folder(root, x[held], y[held], meta.iloc[held].reset_index(drop=True), [str(i) for i in range(10)])
    return model, root


def many_digits(n: int, root: Path) -> Path:
    """`n` distinct images for the memory benchmark: each digit shifted by up to 2 px in each direction
    (25 variants of 1,797 digits), with the demo's metadata; written once, reused by later runs."""
    import torch
    data = Path(root) / f"many-{n}"
    if (data / "metadata.csv").is_file():
        return data
    x, y, meta = digits_images(seed=0)
    i = np.arange(n)
    base, variant = i % len(y), i // len(y)
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    imgs = torch.stack([torch.roll(x[b], shifts[v % 25], dims=(1, 2)) for b, v in zip(base, variant)])
    write_image_folder(data, imgs, y[base], meta.iloc[base].reset_index(drop=True), [str(k) for k in range(10)])
    return data


def madry_workload(n_eval: int, *, eps: float = 0.1, steps: int = 20, epochs: int = 30, cosine: bool = False,
                   binary: bool = False, cache: Path | None = None, root: Path | None = None):
    """(adversarially trained digits CNN, data folder): Madry et al. 2018 training, every batch replaced by
    PGD examples (`steps` steps of 2.5*eps/steps from a random start, L-inf `eps`, plain cross-entropy),
    on the same split as digits_workload. `cosine`: the learning rate decays to 0 along a cosine over the
    epochs (training to convergence: the hard workloads of bench_autoattack.py). `binary`: the digits as
    black-and-white strokes (thresholded at half intensity, scanner C's wash-out undone first), as MNIST's
    are: at L-inf 0.3 a gray digit can be erased outright (a PGD-40 model trained at 0.3 on the gray
    digits keeps 0% at 0.2), a binary one cannot. Robust accuracy at 0.3 stays far below the published
    MNIST models' (README: 1,100 training images are not 60,000). Minutes on 2 cores, so the weights are
    cached in `cache`; the model's initialisation is seeded, so a fresh cache trains the same weights
    on the same torch build."""
    import torch
    from cnnaudit.demo import DigitsCNN

    x, y, meta = digits_images(seed=0)
    if binary:
        washed = torch.from_numpy(meta["scanner"].to_numpy() == "C")
        x = (torch.where(washed[:, None, None, None], (x - 0.55) / 0.3, x) > 0.5).float()
        meta = meta.drop(columns=["scanner"])  # the wash-out is undone: the column would describe nothing
    perm = np.random.default_rng(0).permutation(len(y))
    train, held = perm[:1100], np.sort(perm[1100:1100 + n_eval])
    cache = Path(cache or Path(__file__).resolve().parent / ".cache")
    tag = ("-cosine" if cosine else "") + ("-binary" if binary else "")
    weights = cache / f"madry-digits-eps{eps:g}-steps{steps}-epochs{epochs}{tag}.pt"
    torch.manual_seed(0)
    model = cached(DigitsCNN(), weights, lambda m: adversarially_trained(m, x[train], torch.from_numpy(y)[train], eps=eps,
                                                                         steps=steps, epochs=epochs, cosine=cosine))
    root = Path(root or tempfile.mkdtemp(prefix="cnnaudit-bench-")) / "data"
    write_image_folder(root, x[held], y[held], meta.iloc[held].reset_index(drop=True), [str(i) for i in range(10)])
    return model, root


def cached(model, weights: Path, train):
    """`model` in eval mode with the weights stored at `weights`, or trained by train(model) and stored there."""
    import torch
    if weights.is_file():
        model.load_state_dict(torch.load(weights, weights_only=True))
    else:
        model = train(model)
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights)
    return model.eval()


def adversarially_trained(model, xs, ys, *, eps: float, steps: int, epochs: int, cosine: bool, lr: float = 2e-3,
                          batch: int = 64):
    """Madry et al. 2018 training of `model` on (xs, ys): each batch replaced by its PGD examples."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total = epochs * -(-len(ys) // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + np.cos(np.pi * i / total)) if cosine else 1.0)
    g = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        ramp = min(1.0, (epoch + 1) / (epochs / 3))  # eps warm-up over the first third (a common stabiliser)
        for idx in torch.randperm(len(ys), generator=g).split(batch):
            xb, yb = xs[idx], ys[idx]
            e = eps * ramp
            model.eval()
            delta = (torch.rand_like(xb) * 2 - 1) * e
            for _ in range(steps):
                delta.requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model((xb + delta).clamp(0, 1)), yb), delta)
                delta = (delta.detach() + 2.5 * e / steps * grad.sign()).clamp(-e, e)
            model.train()
            opt.zero_grad()
            F.cross_entropy(model((xb + delta).clamp(0, 1)), yb).backward()
            opt.step()
            sched.step()
    return model


def robust_resnet_workload(n_eval: int, *, eps: float = 0.1, steps: int = 7, epochs: int = 5,
                           cache: Path | None = None, root: Path | None = None):
    """(torchvision ResNet-18 adversarially trained at 32 px, 3 channels, data folder): the CIFAR-size
    workload of bench_autoattack.py, Madry training with PGD-`steps` at L-inf `eps` for a few epochs on the
    digits resnet_workload trains on (cosine learning rate; minutes on 2 cores, cached)."""
    import torch
    from torchvision.models import resnet18

    x, y, meta = digits_images(seed=0)
    perm = np.random.default_rng(0).permutation(len(y))
    held = np.sort(perm[:n_eval])
    train = perm[n_eval:] if len(perm) - n_eval >= 500 else perm[-800:]
    cache = Path(cache or Path(__file__).resolve().parent / ".cache")
    weights = cache / f"madry-resnet18-n{n_eval}-eps{eps:g}-steps{steps}-epochs{epochs}.pt"
    torch.manual_seed(0)
    model = cached(resnet18(num_classes=10), weights, lambda m: adversarially_trained(
        m, x[train].expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(y)[train], eps=eps, steps=steps,
        epochs=epochs, cosine=True))
    root = Path(root or tempfile.mkdtemp(prefix="cnnaudit-bench-")) / "data"
    write_image_folder(root, x[held], y[held], meta.iloc[held].reset_index(drop=True), [str(i) for i in range(10)])
    return model, root
