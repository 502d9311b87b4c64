"""The reference models: LeNet-300-100, LeNet-5 (Caffe variant), MLP-128, a tiny GPT."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def tag_arch(model: nn.Module, name: str, **kwargs: Any) -> nn.Module:
    """Record the zoo builder and its arguments on ``model`` (saved as its architecture)."""
    model._mz_arch = {"kind": "zoo", "name": name, "kwargs": kwargs}
    return model


def check_positive(**values: int) -> None:
    """Raise ConfigError unless every keyword value is a positive integer."""
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{k} must be a positive integer, got {v!r}")


def lenet300(in_features: int = 784, num_classes: int = 10, hidden: tuple[int, int] = (300, 100)
             ) -> nn.Sequential:
    """LeNet-300-100 (Han et al. 2015): 784-300-100-10, 266K weights on 28x28 inputs."""
    h1, h2 = hidden
    check_positive(in_features=in_features, num_classes=num_classes, h1=h1, h2=h2)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(),
        nn.Linear(h2, num_classes),
    )
    return tag_arch(model, "lenet300", in_features=in_features, num_classes=num_classes,
                    hidden=[h1, h2])


def lenet5(in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
           channels: tuple[int, int] = (20, 50), hidden: int = 500) -> nn.Sequential:
    """LeNet-5 as in Caffe / Deep Compression: conv 20@5x5, conv 50@5x5, fc 500, fc 10.

    431K weights at 28x28. Inputs smaller than 16 pixels get padding 2 so that 8x8
    digits fit. ReLU follows each conv (Caffe has none there; it trains better).
    """
    c1, c2 = channels
    check_positive(in_channels=in_channels, image_size=image_size, num_classes=num_classes,
                   c1=c1, c2=c2, hidden=hidden)
    pad = 2 if image_size < 16 else 0
    s = (image_size + 2 * pad - 4) // 2
    s = (s + 2 * pad - 4) // 2
    if s < 1:
        raise ConfigError(f"image_size {image_size} is too small for LeNet-5")
    model = nn.Sequential(
        nn.Conv2d(in_channels, c1, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * s * s, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )
    return tag_arch(model, "lenet5", in_channels=in_channels, image_size=image_size,
                    num_classes=num_classes, channels=[c1, c2], hidden=hidden)


def mlp128(in_features: int = 784, num_classes: int = 10, hidden: int = 128) -> nn.Sequential:
    """The seed example: Flatten, Dense 128 ReLU, Dense 10."""
    check_positive(in_features=in_features, num_classes=num_classes, hidden=hidden)
    model = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                          nn.Linear(hidden, num_classes))
    return tag_arch(model, "mlp128", in_features=in_features, num_classes=num_classes,
                    hidden=hidden)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with separate q/k/v projections (prunable per head)."""

    def __init__(self, d_model: int, n_head: int, head_dim: int | None = None):
        super().__init__()
        self.n_head = n_head
        self.head_dim = head_dim or d_model // n_head
        inner = self.n_head * self.head_dim
        self.q = nn.Linear(d_model, inner)
        self.k = nn.Linear(d_model, inner)
        self.v = nn.Linear(d_model, inner)
        self.proj = nn.Linear(inner, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        shape = (b, t, self.n_head, self.head_dim)
        q, k, v = (f(x).view(shape).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, self.n_head * self.head_dim))

    def get_extra_state(self) -> torch.Tensor:
        # a tensor (not a dict) so that exporters that detach every state entry work
        return torch.tensor([self.n_head, self.head_dim])

    def set_extra_state(self, state: Any) -> None:
        values = state.tolist() if isinstance(state, torch.Tensor) else state
        if isinstance(values, dict):  # files written before the state became a tensor
            values = [values.get("n_head"), values.get("head_dim")]
        if not (isinstance(values, (list, tuple)) and len(values) == 2
                and all(isinstance(v, int) and v > 0 for v in values)):
            from ..errors import FormatError

            raise FormatError("bad attention state")
        self.n_head, self.head_dim = values


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, d_ff: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential()
        self.mlp.fc = nn.Linear(d_model, d_ff)
        self.mlp.act = nn.GELU()
        self.mlp.proj = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


class TinyGPT(nn.Module):
    """A small decoder-only character transformer (pre-LayerNorm, learned positions)."""

    def __init__(self, vocab_size: int, seq_len: int = 128, d_model: int = 192,
                 n_layer: int = 4, n_head: int = 6, d_ff: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        check_positive(vocab_size=vocab_size, seq_len=seq_len, d_model=d_model, n_layer=n_layer,
                       n_head=n_head)
        if d_model % n_head:
            raise ConfigError(f"d_model {d_model} not divisible by n_head {n_head}")
        self.seq_len = seq_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, n_head, d_ff or 4 * d_model, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.seq_len:
            raise ConfigError(f"sequence length {t} exceeds the model's {self.seq_len}")
        pos = torch.arange(t, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, n: int, temperature: float = 1.0) -> torch.Tensor:
        for _ in range(n):
            logits = self(idx[:, -self.seq_len:])[:, -1] / max(temperature, 1e-6)
            idx = torch.cat([idx, torch.multinomial(F.softmax(logits, -1), 1)], dim=1)
        return idx


def tiny_gpt(vocab_size: int = 65, seq_len: int = 128, d_model: int = 192, n_layer: int = 4,
             n_head: int = 6, d_ff: int | None = None, dropout: float = 0.0) -> TinyGPT:
    """A ~1.9M-parameter character GPT by default (65 symbols: Tiny Shakespeare)."""
    model = TinyGPT(vocab_size, seq_len, d_model, n_layer, n_head, d_ff, dropout)
    return tag_arch(model, "tiny_gpt", vocab_size=vocab_size, seq_len=seq_len, d_model=d_model,
                    n_layer=n_layer, n_head=n_head, d_ff=d_ff, dropout=dropout)


def count_weights(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))


