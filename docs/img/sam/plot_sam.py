"""Draw docs/img/sam/perturbation.png: SAM's and ASAM's e_hat in two
dimensions, computed by the library (optim.torch.SAM's first_step), with the
ball each maximises over and the level line of e.g that touches it.

    PYTHONPATH=python /usr/bin/python3 docs/img/sam/plot_sam.py [--out docs/img/sam]
"""
import argparse
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import optim.torch as ot  # noqa: E402

W = np.array([1.0, 0.25])   # the weights
G = np.array([0.6, 0.9])    # the gradient at W
RHO = 0.5


def e_hat(p, adaptive=False, eta=0.0):
    """e_hat as liboptim computes it: first_step's move, read back."""
    w = torch.tensor(W, dtype=torch.float32, requires_grad=True)
    sam = ot.SAM([w], ot.SGD, rho=RHO, p=p, adaptive=adaptive, eta=eta, lr=0.1)
    w.grad = torch.tensor(G, dtype=torch.float32)
    start = w.detach().clone()
    sam.first_step()
    e = (w.detach() - start).double().numpy()
    sam.restore()
    return e


def ball(p, scale=(1.0, 1.0), n=721):
    """The boundary of {e : ||e / scale||_p <= RHO}."""
    t = np.linspace(0, 2 * math.pi, n)
    c, s = np.cos(t), np.sin(t)
    if math.isinf(p):
        r = 1.0 / np.maximum(np.abs(c), np.abs(s))
    else:
        r = (np.abs(c) ** p + np.abs(s) ** p) ** (-1.0 / p)
    return RHO * r * c * scale[0], RHO * r * s * scale[1]


def tangent(ax, e, color, normal):
    """The level line {x : x.normal = e.normal}, through e."""
    d = np.array([-normal[1], normal[0]])
    d /= np.linalg.norm(d)
    pts = np.array([e - 0.6 * d, e + 0.6 * d])
    ax.plot(pts[:, 0], pts[:, 1], color=color, lw=0.8, ls=":")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    colors = {1.5: "tab:purple", 2: "tab:blue", 3: "tab:green", math.inf: "tab:red"}

    ax = axes[0]
    for p, color in colors.items():
        x, y = ball(p)
        label = "p = inf" if math.isinf(p) else "p = %g" % p
        ax.plot(x, y, color=color, lw=1.2, label=label)
        e = e_hat(p)
        ax.plot(*e, "o", color=color)
        tangent(ax, e, color, G)
    g = G / np.linalg.norm(G) * RHO * 1.25
    ax.annotate("", xy=g, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="black"))
    ax.text(g[0] + 0.02, g[1], "g", fontsize=11)
    ax.set_title("SAM: e_hat maximises e.g over ||e||_p <= rho\n(dotted: the level line of e.g it touches)",
                 fontsize=9)

    ax = axes[1]
    for (p, eta), color in {(2, 0.0): "tab:blue", (2, 0.5): "tab:cyan", (math.inf, 0.0): "tab:red",
                            (math.inf, 0.5): "tab:orange"}.items():
        t = np.abs(W) + eta
        x, y = ball(p, t)
        label = "p = %s, eta = %g" % ("inf" if math.isinf(p) else p, eta)
        ax.plot(x, y, color=color, lw=1.2, label=label)
        e = e_hat(p, adaptive=True, eta=eta)
        ax.plot(*e, "o", color=color)
        tangent(ax, e, color, G)
    ax.annotate("", xy=g, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="black"))
    ax.text(g[0] + 0.02, g[1], "g", fontsize=11)
    ax.set_title("ASAM: the ball ||e / T_w||_p <= rho, T_w = |w| + eta, w = (%g, %g)" % tuple(W), fontsize=9)

    for ax in axes:
        ax.axhline(0, color="0.8", lw=0.6)
        ax.axvline(0, color="0.8", lw=0.6)
        ax.set_aspect("equal")
        ax.set_xlim(-1.0, 1.0)
        ax.set_ylim(-0.9, 0.9)
        ax.set_xlabel("e_1")
        ax.set_ylabel("e_2")
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle("rho = %g, g = (%g, %g): points are liboptim's e_hat (first_step's move)" % ((RHO,) + tuple(G)),
                 fontsize=10)
    fig.tight_layout()
    path = os.path.join(args.out, "perturbation.png")
    fig.savefig(path, dpi=110)
    print(path)


if __name__ == "__main__":
    main()
