"""Where a model comes from: a file or folder (model/loading.py), an in-memory module or function (the Python
API), `--model-fn package.module:function`, or an inference endpoint's URL (model/endpoint.py); and
`--query-only`, which audits any of them as an attacker who can only query it (model/query.py)."""

from __future__ import annotations

import os
import re

from torch import nn

from ..errors import AuditError
from .loading import LoadedModel, from_module, load_model
from .query import CallableQuery, QueryModule, TorchQuery, check_layout, load_function

URL_SCHEMES = ("http://", "https://")


def is_url(model) -> bool:
    return isinstance(model, str) and model.lower().startswith(URL_SCHEMES)


def resolve_headers(specs) -> dict[str, str]:
    """`NAME=ENV_VAR` pairs as {NAME: the variable's value}: a token is read from the environment, never
    from the command line (where `ps` and shell history would show it), and never logged."""
    out = {}
    for spec in specs or ():
        name, sep, var = str(spec).partition("=")
        if not sep or not name.strip() or not var.strip():
            raise AuditError(f"--header {spec!r} must look like NAME=ENV_VAR (e.g. Authorization=MY_TOKEN, with "
                             "MY_TOKEN='Bearer ...' in the environment).")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var.strip()):  # never echo what may be the token itself
            raise AuditError(f"--header {name.strip()}=...: after '=' give the name of an environment variable that "
                             "holds the value (e.g. Authorization=MY_TOKEN), never the value itself.")
        value = os.environ.get(var.strip())
        if value is None:
            raise AuditError(f"--header {name.strip()}: the environment variable {var.strip()!r} is not set; export "
                             "it with the header's value.")
        out[name.strip()] = value
    return out


def open_model(model, config, device, *, unsafe_pickle: bool = False) -> LoadedModel:
    """The LoadedModel for `model` under `config` (layout, query_only, model_fn, the endpoint's settings)."""
    layout = check_layout(config.layout)
    if config.model_fn:
        if model is not None:
            raise AuditError("--model-fn names the model; give DATA only (cnnaudit run --model-fn pkg.mod:fn DATA).")
        loaded = _callable(load_function(config.model_fn), config.model_fn, layout)
    elif isinstance(model, nn.Module):
        loaded = from_module(model)
    elif callable(model):  # a Python function handed to the API
        loaded = _callable(model, getattr(model, "__qualname__", "function"), layout)
    elif is_url(model):
        from .endpoint import EndpointQuery
        backend = EndpointQuery(model, batch=config.request_batch, timeout=config.request_timeout,
                                retries=config.request_retries, concurrency=config.request_concurrency,
                                headers=resolve_headers(config.headers), layout=layout)
        loaded = _query(backend, backend.url, "endpoint")  # without user, password or query: they may be secrets
    else:
        loaded = load_model(model, arch=config.arch, num_classes=config.num_classes, unsafe_pickle=unsafe_pickle,
                            channels=config.channels, layout=layout, query_only=config.query_only)
    if config.query_only and loaded.gradients:
        loaded.module = QueryModule(TorchQuery(loaded.module.to(device), device))
        loaded.gradients, loaded.supports_hooks = False, False
        loaded.backend = {"runtime": "torch", "query_only": True}
        loaded.notes.append("--query-only: the model is audited as an attacker who can only query it (no "
                            "gradients): the adversarial check runs the gradient-free Square attack alone.")
    return loaded


def _callable(fn, name: str, layout: str | None) -> LoadedModel:
    backend = CallableQuery(fn, name)
    backend.layout = layout or "nchw"
    return _query(backend, f"<function {name}>", "callable")


def _query(backend, path: str, fmt: str) -> LoadedModel:
    from .loading import _static_hints
    from .query import to_nchw
    batch, pre = _static_hints(to_nchw(backend.input_shape, backend.layout))
    return LoadedModel(QueryModule(backend), path, fmt, None, supports_hooks=False, batch_hint=batch,
                       preprocessing=pre, gradients=False, layout=backend.layout, backend=backend.describe())
