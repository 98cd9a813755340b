"""Retraining throughput of a standalone network for a train step (forward, backward, SGD) at the protocol's batch size:
images/s for nb201 and darts-cnn (with and without bf16 autocast and channels_last), tokens/s for darts-rnn.

    python -m bench.retrain --space nb201|darts-cnn|darts-rnn [--device cuda] [--steps 20] [--batch 96] [--arch A]

Without --arch: the space's largest cell for nb201, DARTS-V2 for darts-cnn, the DARTS-V2 recurrent cell for darts-rnn.
Random inputs (throughput of the model, not of data loading, which is on-device and batched anyway). One JSON line per
configuration.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from eps.params import defaults
from eps.spaces import get_space
from eps.train.common import amp_active, autocast, resolve_device

DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
            "reduce_concat=[2, 3, 4, 5])")


def seconds_per_step(step, device, steps: int, warmup: int) -> float:
    """Mean wall time of ``step()`` over ``steps`` calls after ``warmup`` untimed ones (device synchronised)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def measure(model, device, batch: int, steps: int, amp: bool, channels_last: bool) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        with autocast(device, amp):
            out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return batch / seconds_per_step(step, device, steps, warmup=3)


DARTS_V2_RNN = ("Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1), ('tanh', 2), "
                "('sigmoid', 5), ('tanh', 3), ('relu', 5)], concat=range(1, 9))")


def measure_tokens(model, device, batch: int, bptt: int, steps: int, clip: float) -> float:
    """Tokens/s of the language-model retrain step: bptt x batch tokens, carried hidden state, gradient clipping."""
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=20.0)
    vocab = model.encoder.num_embeddings
    g = torch.Generator(device=device).manual_seed(0)
    hidden = None

    def step():
        nonlocal hidden
        x = torch.randint(0, vocab, (bptt + 1, batch), device=device, generator=g)
        out = model(x[:-1], hidden, generator=g)
        loss = F.cross_entropy(out.logits.reshape(-1, vocab), x[1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        hidden = out.hidden.detach()

    return batch * bptt / seconds_per_step(step, device, steps, warmup=2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="darts-cnn")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=0, help="default: the space's retrain batch size")
    ap.add_argument("--arch", default=None)
    args = ap.parse_args()
    params = defaults()
    section = params[args.space]
    space = get_space(args.space, section)
    device = resolve_device(args.device)
    default = {"darts-cnn": DARTS_V2, "darts-rnn": DARTS_V2_RNN}.get(args.space)
    arch = space.decode(args.arch or default) if (args.arch or default) else space.largest()
    batch = args.batch or section["retrain"]["batch_size"]
    if args.space == "darts-rnn":
        r = section["retrain"]
        torch.manual_seed(0)
        tps = measure_tokens(space.build_network(arch), device, batch, r["bptt"], args.steps, r["clip"])
        print(json.dumps({"space": args.space, "device": str(device), "batch": batch, "bptt": r["bptt"],
                          "tokens_per_s": round(tps, 1)}))
        return
    configs = [(False, False), (False, True)] + ([(True, False), (True, True)] if amp_active(device, True) else [])
    base = None
    for amp, cl in configs:
        torch.manual_seed(0)
        ips = measure(space.build_network(arch), device, batch, args.steps, amp, cl)
        base = base or ips
        row = {"space": args.space, "device": str(device), "batch": batch, "amp_bf16": amp, "channels_last": cl,
               "images_per_s": round(ips, 1), "speedup_vs_fp32_nchw": round(ips / base, 2)}
        print(json.dumps(row))


if __name__ == "__main__":
    main()
