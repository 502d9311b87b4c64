"""DARTS (Liu et al. 2019, "DARTS: Differentiable Architecture Search"), first-order.

Every categorical choice gets a vector of architecture logits ``alpha``; the supernet
computes the softmax(alpha)-weighted mixture of the options:

* widths / channels / hidden units / FFN width: the largest layer, its outputs multiplied
  by the expected keep-mask ``sum_j p_j * 1[unit < w_j]`` (weight sharing as in FBNetV2);
* kernel sizes: the largest kernel, its weights multiplied by the expected centred mask;
* activations: ``sum_j p_j * act_j(z)``;
* depth: ``sum_d p_d * h_d``, the mixture of the outputs after ``d`` layers.

Weights and logits are trained jointly, alternating batches (weights on even batches,
logits on odd ones: the first-order approximation), then the distribution is discretised
by the sampler (arg-max first). For ``tiny_gpt``, d_model and n_head change every shape
and are not relaxed: the supernet uses the largest, and trials draw them at random.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..batches import forward
from ..train import task_loss
from ..zoo.models import TinyGPT
from .builder import activation, conv_plan
from .space import SearchSpace

NOT_RELAXED = {"tiny_gpt": ("d_model", "n_head")}


def relaxed(space: SearchSpace) -> list[str]:
    """The parameter names the supernet relaxes."""
    skip = NOT_RELAXED.get(space.family, ())
    return [k for k in space.params() if k not in skip]


class _Relaxed(nn.Module):
    """Architecture logits and the soft operations every supernet uses."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        self.choices = space.params()
        self.alpha = nn.ParameterDict(
            {k: nn.Parameter(torch.zeros(len(self.choices[k]))) for k in relaxed(space)})
        self.acts = nn.ModuleList(activation(a) for a in space.choices["activation"])

    def p(self, name: str) -> torch.Tensor:
        return F.softmax(self.alpha[name], dim=0)

    def pname(self, key: str, i: int) -> str:
        return f"{key}_{i}" if key in self.space.per_layer else key

    def mask(self, name: str, size: int, scale: int = 1) -> torch.Tensor:
        units = torch.arange(size)
        masks = torch.stack([(units < c * scale).float() for c in self.choices[name]])
        return self.p(name) @ masks

    def act(self, z: torch.Tensor) -> torch.Tensor:
        p = self.p("activation")
        return sum(p[j] * a(z) for j, a in enumerate(self.acts))

    def depth_mix(self, outs: list[torch.Tensor]) -> torch.Tensor:
        p = self.p(self.space.depth_key)
        return sum(p[j] * outs[d - 1] for j, d in enumerate(self.choices[self.space.depth_key]))

    def weights(self) -> list[nn.Parameter]:
        ids = {id(a) for a in self.alpha.values()}
        return [w for w in self.parameters() if id(w) not in ids]


class MLPSuper(_Relaxed):
    def __init__(self, space: SearchSpace):
        super().__init__(space)
        c, h, w = space.fixed["input_shape"]
        self.width = max(space.choices["width"])
        self.layers = nn.ModuleList(nn.Linear(c * h * w if i == 0 else self.width, self.width)
                                    for i in range(space.max_depth))
        self.head = nn.Linear(self.width, space.fixed["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, outs = x.flatten(1), []
        for i, layer in enumerate(self.layers):
            h = self.act(layer(h)) * self.mask(self.pname("width", i), self.width)
            outs.append(h)
        return self.head(self.depth_mix(outs))


class CNNSuper(_Relaxed):
    def __init__(self, space: SearchSpace):
        super().__init__(space)
        cin = space.fixed["input_shape"][0]
        self.c, self.k = max(space.choices["channels"]), max(space.choices["kernel"])
        self.hidden = max(space.choices["hidden"])
        self.plan = conv_plan(space, space.max_depth)
        self.convs = nn.ModuleList(nn.Conv2d(cin if i == 0 else self.c, self.c, self.k)
                                   for i in range(space.max_depth))
        self.bns = nn.ModuleList(nn.BatchNorm2d(self.c) for _ in range(space.max_depth))
        # one classifier input per depth and head choice (flatten: c*s*s features, gap: c)
        self.heads = nn.ModuleList(
            nn.ModuleList(nn.Linear(self.c * (s * s if h == "flatten" else 1), self.hidden)
                          for h in space.choices["head"]) for _, s in self.plan)
        self.out = nn.Linear(self.hidden, space.fixed["num_classes"])

    def norm(self, z: torch.Tensor, i: int) -> torch.Tensor:
        """Mix of the conv output with and without BatchNorm."""
        p = self.p("batchnorm")
        return sum(p[j] * (self.bns[i](z) if bn else z)
                   for j, bn in enumerate(self.choices["batchnorm"]))

    def head(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Mix of the classifier inputs: flattened features or global average pooling."""
        p = self.p("head")
        return sum(p[j] * lin(x.flatten(1) if h == "flatten" else x.mean((2, 3)))
                   for j, (h, lin) in enumerate(zip(self.choices["head"], self.heads[i],
                                                    strict=True)))

    def kernel_mask(self, name: str) -> torch.Tensor:
        masks = []
        for k in self.choices[name]:
            m, lo = torch.zeros(self.k, self.k), (self.k - k) // 2
            m[lo:lo + k, lo:lo + k] = 1
            masks.append(m)
        return torch.einsum("j,jab->ab", self.p(name), torch.stack(masks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zs = []
        for i, (conv, (pool, _)) in enumerate(zip(self.convs, self.plan, strict=True)):
            w = conv.weight * self.kernel_mask(self.pname("kernel", i))
            x = self.act(self.norm(F.conv2d(x, w, conv.bias, padding=self.k // 2), i))
            x = x * self.mask(self.pname("channels", i), self.c).view(1, -1, 1, 1)
            x = F.max_pool2d(x, 2) if pool else x
            zs.append(self.act(self.head(x, i)) * self.mask("hidden", self.hidden))
        return self.out(self.depth_mix(zs))


class GPTSuper(_Relaxed):
    def __init__(self, space: SearchSpace):
        super().__init__(space)
        self.d = max(space.choices["d_model"])
        self.ffn = max(space.choices["ffn_mult"]) * self.d
        self.gpt = TinyGPT(space.fixed["vocab_size"], space.fixed["seq_len"], self.d,
                           space.max_depth, max(space.choices["n_head"]), self.ffn)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        g = self.gpt
        x = g.tok_emb(idx) + g.pos_emb(torch.arange(idx.shape[1]))
        outs = []
        for b in g.blocks:
            x = x + b.attn(b.ln1(x))
            z = self.act(b.mlp.fc(b.ln2(x))) * self.mask("ffn_mult", self.ffn, scale=self.d)
            x = x + b.mlp.proj(z)
            outs.append(x)
        return g.head(g.ln_f(self.depth_mix(outs)))


SUPERNETS = {"mlp": MLPSuper, "cnn": CNNSuper, "tiny_gpt": GPTSuper}


def train_supernet(space: SearchSpace, train_data: Iterable[Any], *, epochs: float,
                   lr: float, arch_lr: float, progress: bool = True) -> dict[str, Any]:
    """Train a supernet of ``space`` (first-order DARTS); the learned choice probabilities."""
    net = SUPERNETS[space.family](space)
    w_opt = torch.optim.AdamW(net.weights(), lr=lr)
    a_opt = torch.optim.Adam(net.alpha.parameters(), lr=arch_lr, betas=(0.5, 0.999),
                             weight_decay=1e-3)
    total = math.ceil(epochs * len(train_data))
    step = 0
    net.train()
    with tqdm(total=total, desc="darts supernet", disable=not progress, leave=False) as bar:
        while step < total:
            for batch in train_data:
                if step >= total:
                    break
                opt = w_opt if step % 2 == 0 else a_opt
                out, target = forward(net, batch)
                loss = task_loss(out, target)
                w_opt.zero_grad(set_to_none=True)
                a_opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                bar.update(1)
    with torch.no_grad():
        return {"probs": {k: net.p(k).tolist() for k in net.alpha}, "steps": step}
