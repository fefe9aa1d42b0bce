"""cnnaudit: audit a trained image classifier before it ships.

    import cnnaudit
    result = cnnaudit.audit("model.pt", "data/", input_size=(224, 224), mean=[0.485, 0.456, 0.406],
                            std=[0.229, 0.224, 0.225])
    result.summary["clean"]["accuracy"]; result.samples.head(); result.write("audit-out/")
"""

import time as _time

IMPORTED_AT = _time.time()  # --budget from the command line counts from here: start-up is the user's time too
__version__ = "0.9.0"


def audit(model, data, *, unsafe_pickle: bool = False, **settings):
    """Run an audit from Python.

    Parameters
    ----------
    model : str, Path, torch.nn.Module or callable
        A model file (TorchScript, torch.export, full pickle with ``unsafe_pickle``, state dict with
        ``arch``, ONNX, TFLite, Keras 3, timm, Hugging Face folder), an Open Inference Protocol endpoint's
        URL (``http://HOST:PORT/v2/models/NAME``), a module in memory, or a function from a float32 numpy
        batch (N x C x H x W) to scores, audited without gradients (``query_only=True`` audits any model so).
    data : str or Path
        A dataset folder (``DATA/<class>/<image>``, or a folder with ``metadata.csv``).
    unsafe_pickle : bool
        Allow loading full pickles (runs code from the file; only for files you trust).
    **settings
        The audit's settings, the fields of :class:`cnnaudit.config.AuditConfig` (``checks``,
        ``input_size``, ``mean``, ``std``, ``channels``, ``limit``, ``seed``, ``batch_size``, ``device``,
        ...), and one keyword per check holding its options: an instance of the check's options class
        (``adversarial=AdversarialOptions(...)``, ``corruption=CorruptionOptions(...)``, ...) or a dict of
        its fields. ``options={"adversarial": {...}}`` is still accepted (deprecated since 0.3.0).

    Returns
    -------
    AuditResult
        ``.summary`` (the summary.json dict), ``.samples`` (one row per sample and condition),
        ``.html()`` and ``.write(folder)``.

    Raises
    ------
    AuditError
        For bad input: an unknown setting or option, a missing file, a model that does not fit the data.

    Examples
    --------
    >>> from cnnaudit.checks.adversarial import AdversarialOptions
    >>> opts = AdversarialOptions(norms=("linf",), eps={"linf": ["8/255"]})
    >>> opts.grid()
    {'linf': [0.03137254901960784]}
    >>> result = cnnaudit.audit(model, "data/", adversarial=opts, limit=200)  # doctest: +SKIP
    """
    import dataclasses
    import warnings

    from .checks import registry
    from .config import AuditConfig
    from .errors import AuditError
    from .pipeline import run_audit

    known = {f.name for f in dataclasses.fields(AuditConfig)}
    checks = registry()
    options = dict(settings.pop("options", None) or {})
    if options:
        warnings.warn("cnnaudit.audit(options={...}) is deprecated; pass each check's options as a keyword, "
                      "e.g. adversarial=AdversarialOptions(...)", DeprecationWarning, stacklevel=2)
    for name in [k for k in settings if k in checks and k not in known]:
        value = settings.pop(name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if not isinstance(value, dict):
            raise AuditError(f"audit(..., {name}=...) takes the {name} check's options class or a dict, "
                             f"not {type(value).__name__}.")
        options[name] = {**options.get(name, {}), **value}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise AuditError(f"audit() has no setting {unknown[0]!r}; settings: {', '.join(sorted(known - {'options'}))}; "
                         f"check options by check name: {', '.join(checks)}.")
    settings.setdefault("quiet", True)
    return run_audit(model, data, AuditConfig(**settings, options=options), unsafe_pickle=unsafe_pickle)


from .errors import AuditError  # noqa: E402  (raised by audit() for bad input)


def compare(baseline, candidate, data, **settings):
    """Audit two models on the same images and compare them, paired (cnnaudit/comparison.py); the settings
    are those of :func:`audit`. Returns a Comparison: ``.comparison`` (comparison.json), ``.write(dir)``."""
    from .comparison import compare as run
    return run(baseline, candidate, data, **settings)


__all__ = ["AuditError", "__version__", "audit", "compare"]
