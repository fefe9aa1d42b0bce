"""cnnaudit: audit a trained image classifier before it ships.

    import cnnaudit
    result = cnnaudit.audit("model.pt", "data/", input_size=(224, 224), mean=[0.485, 0.456, 0.406],
                            std=[0.229, 0.224, 0.225])
    result.summary["clean"]["accuracy"]; result.samples.head(); result.write("audit-out/")
"""

__version__ = "0.3.0"


def audit(model, data, *, unsafe_pickle: bool = False, **options):
    """Run an audit from Python. `model`: a path or an nn.Module; `data`: a dataset folder.

    Keyword options are the fields of `cnnaudit.config.AuditConfig` (checks, input_size, mean, std,
    channels, classes_file, arch, num_classes, device, limit, seed, batch_size, ...). Returns an
    `AuditResult` with `.summary` (dict), `.samples` (DataFrame) and `.write(dir)`.
    """
    from .config import AuditConfig
    from .pipeline import run_audit

    options.setdefault("quiet", True)
    return run_audit(model, data, AuditConfig(**options), unsafe_pickle=unsafe_pickle)


from .errors import AuditError  # noqa: E402  (raised by audit() for bad input)

__all__ = ["AuditError", "__version__", "audit"]
