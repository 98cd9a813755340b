"""The DARTS recurrent-cell language model (spec §3.2): weight-sharing supernet and standalone network.

One recurrent cell layer, embedding = hidden = last hidden size, decoder tied to the embedding. At time t, with input
x_t and previous state h_{t-1}::

    [c_0, z_0] = [x_t, h_{t-1}] W_0                          (2H x 2H)
    s_0 = h_{t-1} + sigmoid(c_0) * (tanh(z_0) - h_{t-1})
    node i (predecessor p, activation f):
    [c, z] = s_p W_{i+1}                                      (H x 2H)
    s_{i+1} = s_p + sigmoid(c) * (f(z) - s_p)
    h_t = mean(s_1 .. s_8)

Weight sharing is one matrix per node position (RandomNAS style): W_{i+1} belongs to node i whatever its predecessor
and activation, so the supernet and the standalone network have exactly the same parameters; they differ only in
where the genotype comes from (per call vs. fixed).

An architecture here is a tuple of 8 ``(activation index, predecessor)`` pairs, activation index into ``OPS``
(1..4; 0 = ``none`` marks an unconnected slot in the reference encoding and is never a node's activation).

Regularisation (training mode only), as DARTS/AWD-LSTM: word-level embedding dropout (``dropoute``, whole rows of
the embedding matrix), locked dropout on the embedded input (``dropouti``) and on the output (``dropout``),
variational dropout on x (``dropoutx``) and on every state that is multiplied by a matrix (``dropouth``), all masks
fixed over the sequence. Every mask is drawn from the ``generator`` passed to ``forward`` so that the caller owns
(and checkpoints) all randomness. The time loop over tokens is inherent to the recurrence; everything inside a step
is vectorised over the batch, and the input half of W_0 is applied to all time steps in one matrix product.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

OPS = ("none", "tanh", "relu", "sigmoid", "identity")
ACTIVATIONS = OPS[1:]   # what sampling and mutation draw from
STEPS = 8
INIT_RANGE = 0.04

Genotype = tuple  # tuple[tuple[int, int], ...] of length STEPS


class RNNOutput(NamedTuple):
    logits: torch.Tensor    # [T, B, V]
    hidden: torch.Tensor    # [B, H], the state after the last token
    raw: torch.Tensor       # [T, B, H], cell outputs before output dropout (TAR)
    dropped: torch.Tensor   # [T, B, H], cell outputs after output dropout (AR)


def _activate(op: int, z: torch.Tensor) -> torch.Tensor:
    if op == 1:
        return torch.tanh(z)
    if op == 2:
        return torch.relu(z)
    if op == 3:
        return torch.sigmoid(z)
    if op == 4:
        return z
    raise ValueError(f"activation index {op} is not one of 1..4 ({', '.join(ACTIVATIONS)})")


def _mask(shape, p: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted-dropout mask: Bernoulli(1 - p) / (1 - p)."""
    keep = 1.0 - p
    return torch.empty(shape, device=like.device, dtype=like.dtype).bernoulli_(keep, generator=generator).div_(keep)


class DartsRNNModel(nn.Module):
    """Parameters and forward shared by the supernet and the standalone network."""

    def __init__(self, vocab: int = 10000, hidden: int = 850, steps: int = STEPS, dropout: float = 0.75,
                 dropouth: float = 0.25, dropoutx: float = 0.75, dropouti: float = 0.2, dropoute: float = 0.1,
                 init_range: float = INIT_RANGE):
        super().__init__()
        self.vocab, self.hidden, self.steps = vocab, hidden, steps
        self.dropout, self.dropouth, self.dropoutx = dropout, dropouth, dropoutx
        self.dropouti, self.dropoute = dropouti, dropoute
        self.encoder = nn.Embedding(vocab, hidden)       # also the decoder's weight (tied)
        self.w0 = nn.Parameter(torch.empty(2 * hidden, 2 * hidden))
        self.ws = nn.ParameterList([nn.Parameter(torch.empty(hidden, 2 * hidden)) for _ in range(steps)])
        self.decoder_bias = nn.Parameter(torch.zeros(vocab))
        with torch.no_grad():
            self.encoder.weight.uniform_(-init_range, init_range)
            self.w0.uniform_(-init_range, init_range)
            for w in self.ws:
                w.uniform_(-init_range, init_range)

    def init_hidden(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.hidden, device=self.w0.device, dtype=self.w0.dtype)

    def run(self, tokens: torch.Tensor, genotype: Genotype, hidden: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> RNNOutput:
        """``tokens`` [T, B] -> logits [T, B, V] along ``genotype``, from ``hidden`` (zeros when None)."""
        T, B = tokens.shape
        H = self.hidden
        if hidden is None:
            hidden = self.init_hidden(B)
        train = self.training
        weight = self.encoder.weight

        emb = F.embedding(tokens, weight)                                   # [T, B, H]
        if train and self.dropoute:
            row_mask = _mask((self.vocab, 1), self.dropoute, weight, generator)
            emb = emb * F.embedding(tokens, row_mask)                       # = embedding of the masked matrix
        if train and self.dropouti:
            emb = emb * _mask((1, B, H), self.dropouti, emb, generator)
        if train:
            x_mask = _mask((B, H), self.dropoutx, emb, generator) if self.dropoutx else None
            h_mask = _mask((B, H), self.dropouth, emb, generator) if self.dropouth else None
        else:
            x_mask = h_mask = None
        x = emb * x_mask if x_mask is not None else emb
        # Input half of W_0 for all steps in one product; unbind once (indexing xw[t] would make backward O(T^2)).
        xw = torch.matmul(x, self.w0[:H]).unbind(0)
        w0h = self.w0[H:]
        ws = list(self.ws)
        used_as_pred = {pred for _, pred in genotype}

        h = hidden
        outputs = []
        for t in range(T):
            hm = h * h_mask if h_mask is not None else h
            c, z = torch.addmm(xw[t], hm, w0h).chunk(2, dim=-1)
            s = torch.lerp(h, torch.tanh(z), torch.sigmoid(c))      # h + sigmoid(c) * (tanh(z) - h)
            states = [s]
            masked = {0: s * h_mask} if h_mask is not None and 0 in used_as_pred else {}
            for i, (op, pred) in enumerate(genotype):
                sp = states[pred]
                spm = masked.get(pred, sp) if h_mask is not None else sp
                c, z = torch.mm(spm, ws[i]).chunk(2, dim=-1)
                s = torch.lerp(sp, _activate(op, z), torch.sigmoid(c))
                states.append(s)
                if h_mask is not None and i + 1 in used_as_pred:
                    masked[i + 1] = s * h_mask
            h = torch.stack(states[1:]).mean(0)
            outputs.append(h)
        raw = torch.stack(outputs)                                          # [T, B, H]
        dropped = raw * _mask((1, B, H), self.dropout, raw, generator) if train and self.dropout else raw
        logits = F.linear(dropped, weight, self.decoder_bias)
        return RNNOutput(logits, h, raw, dropped)


class DartsRNNSupernet(DartsRNNModel):
    """Weight-sharing supernet: the genotype is an argument of every forward."""

    def forward(self, tokens: torch.Tensor, arch: Genotype, hidden: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> RNNOutput:
        return self.run(tokens, arch, hidden, generator)


class DartsRNNNetwork(DartsRNNModel):
    """The standalone network of one genotype (same parameters as the supernet)."""

    def __init__(self, genotype: Genotype, **kwargs):
        super().__init__(steps=len(genotype), **kwargs)
        self.genotype = tuple(tuple(node) for node in genotype)

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> RNNOutput:
        return self.run(tokens, self.genotype, hidden, generator)
