#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A small decoder-only transformer language model trained with AdamW.

The kit runs it undisturbed, under the shim, and frozen/released/thawed in the
middle: the per-step losses must be bit-identical across all of them. So the
run is deterministic by construction, not by luck:

* fixed seeds; the whole data set is generated on the CPU from its own seeded
  generator before training starts;
* torch.use_deterministic_algorithms(True) with CUBLAS_WORKSPACE_CONFIG set;
  TF32 off;
* only operations with deterministic CUDA kernels: embeddings and the loss are
  written as one-hot matrix products instead of gather/scatter (whose backward
  passes accumulate with atomics), attention is written out instead of
  scaled_dot_product_attention (whose fused backward may not be deterministic).

Output, one line each, flushed:
    step N loss <float.hex()> ms <step milliseconds>
    final params <hex>      an exact integer checksum of every parameter
    # ...                   anything else
"""

import argparse
import math
import os
import sys
import time

# Must be set before cuBLAS initialises.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402  (after the environment above)
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, x, causal):
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q = q.view(b, t, h, d // h).transpose(1, 2)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        v = v.view(b, t, h, d // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // h))
        att = att.masked_fill(causal[:t, :t], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyLM(nn.Module):
    def __init__(self, vocab, dim, layers, heads, seq):
        super().__init__()
        self.vocab = vocab
        self.tok = nn.Parameter(torch.randn(vocab, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(seq, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.register_buffer("causal", torch.ones(seq, seq, dtype=torch.bool).triu(1), persistent=False)

    def forward(self, idx):
        t = idx.shape[1]
        x = F.one_hot(idx, self.vocab).to(self.tok.dtype) @ self.tok + self.pos[:t]
        for block in self.blocks:
            x = block(x, self.causal)
        return self.head(self.ln(x))


def make_data(steps, batch, seq, vocab, seed):
    """A learnable synthetic corpus: each token mostly follows from the
    previous one by a fixed rule, sometimes at random. Built on the CPU,
    vectorised over sequences, from its own seeded generator."""
    g = torch.Generator().manual_seed(seed)
    shape = (steps, batch, seq + 1)
    noise = torch.randint(0, vocab, shape, generator=g)
    keep = torch.rand(shape, generator=g) < 0.8
    nxt = (torch.arange(vocab) * 7 + 3) % vocab
    data = torch.empty(shape, dtype=torch.long)
    data[:, :, 0] = noise[:, :, 0]
    for i in range(1, seq + 1):
        data[:, :, i] = torch.where(keep[:, :, i], nxt[data[:, :, i - 1]], noise[:, :, i])
    return data


def param_checksum(model):
    """Exact: an integer weighted sum of every parameter's bit pattern."""
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    bits = flat.view(torch.int32).to(torch.int64)
    weights = torch.arange(1, bits.numel() + 1, device=bits.device, dtype=torch.int64)
    return int((bits * weights).sum().item()) & 0xFFFFFFFFFFFFFFFF


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--pace-ms", type=float, default=0.0,
                    help="sleep between steps, outside the timed region")
    ap.add_argument("--device", default="cuda", help="cpu checks the script on a machine without a GPU")
    args = ap.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        print("# CUDA is not available to torch", flush=True)
        return 1
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    dev = torch.device(args.device)

    data = make_data(args.steps, args.batch, args.seq, args.vocab, args.seed).to(dev)
    model = TinyLM(args.vocab, args.dim, args.layers, args.heads, args.seq).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, foreach=True)
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else dev.type
    print(f"# torch {torch.__version__} cuda {torch.version.cuda} device {name} "
          f"params {sum(p.numel() for p in model.parameters())}", flush=True)

    for step in range(args.steps):
        t0 = time.perf_counter()
        batch = data[step]
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = model(inputs)
        logp = logits.log_softmax(dim=-1)
        loss = -(logp * F.one_hot(targets, args.vocab).to(logp.dtype)).sum(dim=-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()  # synchronises: the step is over
        ms = (time.perf_counter() - t0) * 1e3
        print(f"step {step} loss {value.hex()} ms {ms:.3f}", flush=True)
        if args.pace_ms > 0:
            time.sleep(args.pace_ms / 1e3)

    print(f"final params {param_checksum(model):016x}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
