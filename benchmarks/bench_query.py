"""The cost of auditing a model over the Open Inference Protocol (KServe v2 REST) instead of in-process.

1. Images/s of a tiny digits-size CNN (1x28x28 -> 10 classes) answering predictions in-process (torch, the
   audit's calls of --call images in batches of 64) and over a real MLServer on 127.0.0.1 through
   EndpointQuery (requests of 32 and 64 images, 1 and 4 in flight), as ratios measured in the same run.
   MLServer runs torch on one thread per request (parallel_workers 0: one server process); the in-process
   model uses torch's default threads.
2. The time to write one request's JSON for 64x3x224x224 floats: EndpointQuery's numpy writer against
   json.dumps(x.tolist()).
3. The ONNX fallback's cost: a ResNet-18 (random weights, 3x--onnx-size px) exported to ONNX, its clean
   forward passes through onnx2torch (the default, gradients flow) and through onnxruntime (the fallback and
   --query-only), images/s through cnnaudit's AuditedModel in the same run.

    python benchmarks/bench_query.py [--images 2048] [--call 256] [--size 28] [--skip-encoding] [--skip-onnx]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/oip_server.py: the tests' MLServer helper

from cnnaudit.model.endpoint import EndpointQuery, _json_floats  # noqa: E402
from tests.oip_server import Model, TinyCNN, start_mlserver  # noqa: E402


def rate(predict, x: np.ndarray, call: int, repeats: int) -> float:
    """Images/s of `predict` over x, called on `call` images at a time (best of `repeats`, after a warm-up)."""
    predict(x[:call])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for s in range(0, len(x), call):
            predict(x[s:s + call])
        best = min(best, time.perf_counter() - start)
    return len(x) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--call", type=int, default=256, help="images per predict call (the audit's chunk)")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-encoding", action="store_true")
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--onnx-size", type=int, default=112)
    parser.add_argument("--onnx-images", type=int, default=256)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = TinyCNN(channels=1, size=args.size).eval()
    x = np.random.default_rng(0).random((args.images, 1, args.size, args.size), dtype=np.float32)

    def in_process(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([model(torch.from_numpy(batch[s:s + 64])).numpy() for s in range(0, len(batch), 64)])

    local = rate(in_process, x, args.call, args.repeats)
    print(f"{args.images} images of 1x{args.size}x{args.size}, predict calls of {args.call} images, "
          f"best of {args.repeats}")
    print(f"{'in-process torch (batch 64)':40s} {local:10.0f} images/s   1.00x")

    with tempfile.TemporaryDirectory() as tmp:
        server = start_mlserver(Path(tmp), [Model("digits", model.state_dict(), size=args.size)])
        try:
            print(f"(MLServer ready in {server.startup_s:.1f} s)")
            for batch in (32, 64):
                for concurrency in (1, 4):
                    q = EndpointQuery(server.url("digits"), batch=batch, concurrency=concurrency)
                    got = q.predict(x[:batch])
                    assert np.allclose(got, in_process(x[:batch]), atol=1e-5), "the endpoint's scores differ"
                    r = rate(q.predict, x, args.call, args.repeats)
                    q.close()
                    print(f"{f'endpoint, batch {batch}, concurrency {concurrency}':40s} {r:10.0f} images/s   "
                          f"{r / local:.2f}x")
        finally:
            server.stop()

    if not args.skip_encoding:
        big = np.random.default_rng(1).random((64, 3, 224, 224), dtype=np.float32)
        start = time.perf_counter()
        fast = _json_floats(big)
        t_fast = time.perf_counter() - start
        start = time.perf_counter()
        slow = json.dumps(big.ravel().tolist()).encode()
        t_slow = time.perf_counter() - start
        print(f"JSON of 64x3x224x224 floats: numpy writer {t_fast:.2f} s ({len(fast) / 1e6:.0f} MB), "
              f"json.dumps(tolist) {t_slow:.2f} s ({len(slow) / 1e6:.0f} MB): {t_slow / t_fast:.1f}x")

    if not args.skip_onnx:
        onnx_fallback(args.onnx_size, args.onnx_images, args.repeats)


def onnx_fallback(size: int, n: int, repeats: int) -> None:
    import warnings

    import torchvision

    from cnnaudit.model.onnxfile import load_onnx
    from cnnaudit.model.wrapper import build_audited_model
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet18.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x[:1],), str(path), dynamo=False, opset_version=17, input_names=["x"],
                              dynamic_axes={"x": {0: "n"}})
        rates, outs = {}, {}
        for name, query_only in (("onnx2torch", False), ("onnxruntime", True)):
            loaded = load_onnx(path, "", query_only=query_only)
            model, _ = build_audited_model(loaded.module, channels=3, input_size=(size, size), mean=None, std=None,
                                           device=torch.device("cpu"), gradients=loaded.gradients)

            def forward(batch):
                with torch.no_grad():
                    return torch.cat([model(batch[s:s + 64]) for s in range(0, len(batch), 64)])
            outs[name] = forward(x)
            rates[name] = rate(forward, x, 64, repeats)
        diff = float((outs["onnx2torch"] - outs["onnxruntime"]).abs().max())
        print(f"ResNet-18 ONNX at 3x{size}x{size}, {n} images: onnx2torch {rates['onnx2torch']:.0f} images/s, "
              f"onnxruntime {rates['onnxruntime']:.0f} images/s ({rates['onnxruntime'] / rates['onnx2torch']:.2f}x); "
              f"largest logit difference {diff:.2g}")


if __name__ == "__main__":
    main()
