"""What the compression pipelines return, assembled in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..measure import count_params, file_bytes, fp32_bytes
from .requirement import measure
from .runner import RunContext


@dataclass
class CompressionResult:
    """The best model meeting the requirement, its figures and the story of the search."""

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    met: bool = True
    stopped: str = "completed"  # completed | interrupted | time budget

    @property
    def pareto(self) -> list[dict[str, Any]]:
        """Attempts not dominated in (metric higher, file bytes lower)."""
        pts = [h for h in self.history if h.get("bytes") is not None
               and h.get("metric") is not None]
        return [p for p in pts if not any(
            q["metric"] >= p["metric"] and q["bytes"] <= p["bytes"]
            and (q["metric"], q["bytes"]) != (p["metric"], p["bytes"]) for q in pts)]


def incomplete_reasons(ctx: RunContext, stopped: str) -> list[str]:
    """Why a run is not ``complete``: in words a person can act on."""
    def why(unit: str) -> str:
        failed = ctx.reasons.get(unit)
        return f" ({'; '.join(failed)})" if failed else ""

    out = [f"unit {u} skipped: even its gentlest setting broke the requirement{why(u)}"
           for u in ctx.skipped]
    out += [f"backed off to meet the requirement: {w}" for w in ctx.weakened]
    if stopped != "completed":
        out.append(f"stopped early ({stopped}); the best model so far is returned")
    return out


def build_result(original: nn.Module, best: nn.Module, ctx: RunContext, stopped: str,
                 recipe_name: str) -> CompressionResult:
    """Re-evaluate the final model, check it against the requirement and measure it."""
    req = ctx.requirement
    metric = measure(ctx.evaluate, best, "evaluate(final model)")
    failed = req.failures(best, metric)
    params, nonzeros = count_params(best)
    fb, base = file_bytes(best), fp32_bytes(original)
    metrics: dict[str, Any] = {
        "recipe": recipe_name, "baseline_metric": req.baseline, "metric": metric,
        "drop": req.baseline - metric, "threshold": req.threshold, "params": params,
        "nonzeros": nonzeros, "file_bytes": fb, "fp32_bytes": base, "ratio": base / fb,
        "skipped_units": list(ctx.skipped), "attempts": len(ctx.history) - 1,
        "changed_units": list(ctx.weakened), "failed": failed,
        "backoff_reasons": dict(ctx.reasons),
    }
    failing = [h for h in ctx.history if not h["passed"] and h.get("metric") is not None]
    if failing:
        closest = max(failing, key=lambda h: h["metric"])
        metrics["closest_failing"] = {k: closest[k] for k in ("stage", "metric", "bytes")}
    reasons = incomplete_reasons(ctx, stopped)
    metrics["complete"] = not reasons and not failed
    metrics["incomplete_because"] = reasons + failed
    return CompressionResult(best, metrics, ctx.history, not failed, stopped)
