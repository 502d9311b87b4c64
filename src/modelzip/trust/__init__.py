"""Trust: what compression changed and for whom, budgets on it, and file integrity.

* :func:`trust` (``api.py``) - per-class drops, agreement, calibration, KL, robustness;
* ``metrics.py`` - the pure functions behind it;
* ``robustness.py`` - Gaussian noise, FGSM and PGD with a straight-through estimator;
* ``constraints.py`` - ``check_constraints`` and the gate ``mz.compress`` calls;
* ``signing.py`` - SHA-256 of a .mzip payload and Ed25519 signatures.

Names are resolved lazily so that importing ``modelzip.trust.signing`` (which the file
format layer may do) does not import the model-facing modules.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "trust": "api", "compare_outputs": "api", "detect_task": "api",
    "check_constraints": "constraints", "validate_constraints": "constraints",
    "ConstraintGate": "constraints", "RULES": "constraints",
    "fgsm": "robustness", "pgd": "robustness",
    "differentiable": "robustness",
    "payload_sha256": "signing", "sign": "signing", "verify": "signing",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
