"""Trust: what compression changed and for whom, budgets on it, and file integrity.

* :func:`trust` (``api.py``) - per-class drops, agreement, calibration, KL, robustness;
* ``metrics.py`` - the pure functions behind it;
* ``robustness.py`` - Gaussian noise, FGSM and PGD with a straight-through estimator;
* ``constraints.py`` - ``check_constraints`` and the gate ``mz.compress`` calls;
* file integrity (SHA-256 of the payload, Ed25519 signatures) lives with the file format in
  :mod:`modelzip.io.signing`, so ``mz.save(sign_key=)`` / ``mz.load(verify_key=)`` need
  nothing above it; its names are re-exported here.

Names are resolved lazily so that importing this package does not import the model-facing
modules.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "trust": "api", "compare_outputs": "api", "detect_task": "api",
    "check_constraints": "constraints", "validate_constraints": "constraints",
    "ConstraintGate": "constraints", "RULES": "constraints",
    "fgsm": "robustness", "pgd": "robustness",
    "differentiable": "robustness",
    "payload_sha256": "..io.signing", "sign": "..io.signing", "verify": "..io.signing",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    target = module[1:] if module.startswith("..") else f".{module}"
    return getattr(import_module(target, "modelzip" if module.startswith("..") else __name__),
                   name)
