"""A user model factory (``tests.factory_models:digits_mlp``) for the trust_code tests."""

from __future__ import annotations

from torch import nn


def digits_mlp(hidden: int = 24) -> nn.Module:
    """A small classifier of 8x8 digits that is not in the zoo."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))
