"""A small CNN trained as pytorch/examples' MNIST script trains it (Adadelta,
StepLR, one epoch = a few hundred steps), in channels_last memory format (a
common CPU speed-up), written for torch.optim: the only line that differs
between torch.optim and optim.torch is the import (--impl chooses it here so
that the tests can run both and compare; scripts would just edit the line).

Data: synthetic 28x28 "images" of 10 classes (a class-dependent pattern plus
noise), generated from the seed, so that the script needs no download and
runs in a few seconds on a CPU.

    python3 examples/torch_cnn.py --impl optim            # optim.torch
    python3 examples/torch_cnn.py --impl torch            # torch.optim
    python3 examples/torch_cnn.py --memory-format contiguous
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 1)
        self.fc1 = nn.Linear(16 * 12 * 12, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


def synthetic_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(10, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = patterns[labels] + 0.8 * torch.randn(n, 1, 28, 28, generator=g)
    return images, labels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=("optim", "torch"), default="optim")
    ap.add_argument("--memory-format", choices=("channels_last", "contiguous"), default="channels_last")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--gamma", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    if args.impl == "torch":
        import torch.optim as optim
        from torch.optim.lr_scheduler import StepLR
    else:
        import optim.torch as optim  # the one line a user changes
        from optim.torch.lr_scheduler import StepLR

    torch.manual_seed(args.seed)
    fmt = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    model = Net().to(memory_format=fmt)
    images, labels = synthetic_data(args.samples, args.seed)
    images = images.contiguous(memory_format=fmt)

    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    losses = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        for start in range(0, args.samples, args.batch_size):
            data, target = images[start:start + args.batch_size], labels[start:start + args.batch_size]
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
        if not args.quiet:
            print("epoch %d: mean loss %.4f, lr %.4g" % (epoch, sum(losses[-args.samples // args.batch_size:])
                                                        / (args.samples // args.batch_size),
                                                        optimizer.param_groups[0]["lr"]))
    return model, optimizer, losses


if __name__ == "__main__":
    main()
