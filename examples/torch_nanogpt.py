"""A tiny GPT trained as nanoGPT's train.py trains one, written for
torch.optim: AdamW with two parameter groups (weight decay on matrices and
embeddings, none on biases and norms; betas (0.9, 0.95)), a linear warm-up
and a cosine decay as two stacked schedulers (LinearLR and
CosineAnnealingLR, both stepped every iteration: torch composes them),
gradient accumulation, clipping with torch.nn.utils.clip_grad_norm_, and a
resume from a torch.save'd checkpoint (model, optimizer and both
schedulers) halfway. The only line that differs between torch.optim and
optim.torch is the import (--impl chooses it here so that the tests can run
both and compare).

Data: a synthetic character stream (a few repeated phrases with random
choices), generated from the seed; a few seconds on a CPU.

    python3 examples/torch_nanogpt.py --impl optim
    python3 examples/torch_nanogpt.py --impl torch
"""
import argparse
import math
import os
import tempfile

import torch
import torch.nn as nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        # No attention biases (nanoGPT's bias=False): the key bias has a
        # gradient of exactly 0 (softmax ignores a constant added to every
        # score), so it would move by rounding noise that Adam scales up to lr.
        self.attn = nn.MultiheadAttention(n_embd, n_head, batch_first=True, bias=False)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))
        self.register_buffer("mask", torch.triu(torch.ones(block_size, block_size, dtype=torch.bool), 1))

    def forward(self, x):
        t = x.size(1)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=self.mask[:t, :t], need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList([Block(n_embd, n_head, block_size) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx, targets):
        pos = torch.arange(idx.size(1))
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    def configure_optimizers(self, optim, weight_decay, learning_rate, betas):
        """nanoGPT's: every 2-D (or larger) parameter decays, the rest does not."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return optim.AdamW(groups, lr=learning_rate, betas=betas)


def synthetic_text(n, seed):
    g = torch.Generator().manual_seed(seed)
    words = ["the cat ", "a dog ", "sat on ", "the mat ", "ran to ", "my house ", "quickly ", "and then "]
    out = []
    while sum(map(len, out)) < n:
        out.append(words[int(torch.randint(len(words), (1,), generator=g))])
    text = "".join(out)[:n]
    chars = sorted(set(text))
    return torch.tensor([chars.index(c) for c in text]), len(chars)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=("optim", "torch"), default="optim")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--resume-at", type=int, default=20, help="save, rebuild everything and resume here (0: never)")
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--accum", type=int, default=2, help="gradient accumulation steps")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr", type=float, default=3e-4)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--out-dir", default=None, help="where the checkpoint goes (default: a temporary directory)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    if args.impl == "torch":
        import torch.optim as optim
    else:
        import optim.torch as optim  # the one line a user changes
    lr_scheduler = optim.lr_scheduler

    torch.manual_seed(args.seed)
    data, vocab = synthetic_text(20000, args.seed)
    batch_gen = torch.Generator().manual_seed(args.seed + 1)

    def get_batch():
        ix = torch.randint(len(data) - args.block_size - 1, (args.batch_size,), generator=batch_gen)
        x = torch.stack([data[i:i + args.block_size] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + args.block_size] for i in ix])
        return x, y

    def build():
        model = GPT(vocab, block_size=args.block_size)
        optimizer = model.configure_optimizers(optim, args.weight_decay, args.lr, (0.9, 0.95))
        warmup = lr_scheduler.LinearLR(optimizer, start_factor=1e-2, total_iters=args.warmup)
        cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.iters, eta_min=args.min_lr)
        return model, optimizer, warmup, cosine

    model, optimizer, warmup, cosine = build()
    tmp = None
    out_dir = args.out_dir
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory()
        out_dir = tmp.name
    losses, lrs = [], []
    it = 0
    while it < args.iters:
        if args.resume_at and it == args.resume_at:
            path = os.path.join(out_dir, "ckpt.pt")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "warmup": warmup.state_dict(), "cosine": cosine.state_dict(),
                        "iter": it, "rng": batch_gen.get_state()}, path)
            del model, optimizer, warmup, cosine
            model, optimizer, warmup, cosine = build()  # as a new process would
            ckpt = torch.load(path)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            warmup.load_state_dict(ckpt["warmup"])
            cosine.load_state_dict(ckpt["cosine"])
            batch_gen.set_state(ckpt["rng"])
            if not args.quiet:
                print("resumed from %s at iter %d" % (path, ckpt["iter"]))
        for _ in range(args.accum):
            x, y = get_batch()
            loss = model(x, y) / args.accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        warmup.step()
        cosine.step()
        losses.append(loss.item() * args.accum)
        lrs.append(optimizer.param_groups[0]["lr"])
        it += 1
        if not args.quiet and (it % 10 == 0 or it == args.iters):
            print("iter %d: loss %.4f, lr %.3g" % (it, losses[-1], lrs[-1]))
    if tmp is not None:
        tmp.cleanup()
    assert math.isfinite(losses[-1])
    return model, optimizer, losses, lrs


if __name__ == "__main__":
    main()
