"""Render a run of `optim lab`: PNG figures and a self-contained report.html.

    /usr/bin/python3 -m optim.lab.render <run directory>

Reads summary.json and the CSV files the C program wrote; every number in the
report comes from them. The sentence that says whether a seed's claim held is
computed by the experiment (summary.json, "finding"); this module only draws.

Exit status: 0 rendered, 2 bad directory or data, 3 matplotlib/numpy missing.
"""
import base64
import csv
import html
import io
import json
import math
import os
import sys
import tempfile

EXIT_BAD_INPUT = 2
EXIT_NO_MATPLOTLIB = 3

try:
    import numpy as np
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.ticker
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D
except ImportError as _exc:  # pragma: no cover - exercised by running without matplotlib
    np = plt = None
    _IMPORT_ERROR = _exc
else:
    _IMPORT_ERROR = None

DPI = 110

# One colour and marker per optimizer, the same in every figure.
STYLE = {
    "sgd": ("#1f77b4", "o"),
    "momentum": ("#17becf", "s"),
    "adagrad": ("#d62728", "v"),
    "rmsprop": ("#2ca02c", "^"),
    "adadelta": ("#9467bd", "D"),
    "adam": ("#ff7f0e", "P"),
    "adamw": ("#8c564b", "X"),
    "radam": ("#e377c2", "*"),
    "nadam": ("#7f7f7f", "h"),
    "adabound": ("#bcbd22", "d"),
    "sam": ("#000000", "p"),
    "adadelta-momentum": ("#c5b0d5", ">"),
    "rmsprop-momentum": ("#98df8a", "<"),
    # optim lab modern's rules (issue 13)
    "lion": ("#e6194b", "*"),
    "lamb": ("#3cb44b", "s"),
    "lars": ("#4363d8", "^"),
    "adafactor": ("#911eb4", "D"),
    "sf_adamw": ("#f58231", "v"),
    "sf_sgd": ("#42d4f4", ">"),
    "muon": ("#f032e6", "h"),
}


def style(name):
    return STYLE.get(name, ("#333333", "."))


class BadRun(Exception):
    """The directory is not a usable run of optim lab."""


# ---- Reading -------------------------------------------------------------------------


def read_csv(run_dir, name):
    """Rows of a CSV file as dicts; numbers stay strings (see num)."""
    path = os.path.join(run_dir, name)
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError as exc:
        raise BadRun("cannot read %s: %s" % (path, exc.strerror))


def num(s):
    """A CSV cell as a float ("nan", "inf" and "" become NaN/inf)."""
    try:
        return float(s)
    except (TypeError, ValueError):
        return float("nan")


def group(rows, key):
    """Rows grouped by rows[key], in order of first appearance."""
    out = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out


def read_grid(run_dir, name):
    """The surface grid written by the C side: x values, y values, f[y, x]."""
    path = os.path.join(run_dir, name)
    try:
        with open(path) as f:
            header = f.readline().rstrip("\n").split(",")
            xs = np.array([float(v) for v in header[1:]])
            data = np.loadtxt(f, delimiter=",", ndmin=2)
    except (OSError, ValueError) as exc:
        raise BadRun("cannot read the grid %s: %s" % (path, exc))
    return xs, data[:, 0], data[:, 1:]


def smooth(values, window):
    """Trailing moving average (NaN-aware enough for plotting)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or len(v) < window:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v)
    out[window - 1:] = (c[window:] - c[:-window]) / window
    for i in range(window - 1):
        out[i] = v[: i + 1].mean()
    return out


# ---- Drawing helpers -----------------------------------------------------------------


def contour(ax, run_dir, grid_name, levels=24, linear=False):
    """Filled and line contours of a surface grid, log-spaced unless linear."""
    xs, ys, f = read_grid(run_dir, grid_name)
    X, Y = np.meshgrid(xs, ys)
    if linear or np.nanmin(f) <= 0:
        lv = np.linspace(np.nanmin(f), np.nanmax(f), levels)
        norm = None
    else:
        lo = max(np.nanmin(f), np.nanmax(f) * 1e-9, 1e-12)
        lv = np.geomspace(lo, np.nanmax(f), levels)
        norm = LogNorm(vmin=lv[0], vmax=lv[-1])
    # Thin level lines coloured from low (dark) to high (light) on a plain
    # background: the paths on top stay readable, and the PNG stays small.
    ax.contour(X, Y, f, levels=lv, cmap="viridis", linewidths=0.6, norm=norm)
    ax.set_facecolor("#fbfbfb")
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])


def save(fig, run_dir, name):
    """Write the figure to run_dir/name as savefig(bbox_inches="tight") would
    (cropped to what it draws, with savefig's padding), re-encoded with a
    palette (_shrink). The crop takes one layout pass (savefig's "tight" takes
    two) and the drawing goes to the re-encoding uncompressed."""
    path = os.path.join(run_dir, name)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - matplotlib depends on PIL
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        plt.close(fig)
        return name
    # Laid out at the saving resolution (text extents depend on it), as savefig does.
    fig.set_dpi(DPI)
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(matplotlib.rcParams["savefig.pad_inches"])
    # Drawn to a PNG in memory, stored uncompressed (no zlib work), for the re-encoding.
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, bbox_inches=box, pil_kwargs={"compress_level": 0})
    rgba = Image.open(png)
    plt.close(fig)
    _shrink(rgba.convert("RGB"), path)
    return name


def _hex_rgb(h):
    return tuple(int(h[i:i + 2], 16) for i in (1, 3, 5))


# Colours the palette must hold exactly: the optimizers', black, white, gold
# (median cut alone gives thin coloured lines the nearest contour colour).
KEEP_COLORS = sorted({_hex_rgb(c) for c, _ in STYLE.values()} | {
    (0, 0, 0), (255, 255, 255), (255, 215, 0), _hex_rgb("#2ca02c"), _hex_rgb("#d62728"), _hex_rgb("#1f77b4"),
    _hex_rgb("#ff7f0e"), _hex_rgb("#9467bd")})


def _shrink(rgb, path):
    """Write an RGB image to path as a PNG with a 256-colour palette: a quarter
    of the bytes of the full-colour PNG for the same look (the report embeds
    every figure)."""
    from PIL import Image

    n = 256 - len(KEEP_COLORS)
    # The palette of median cut over every other pixel of every other row: a
    # quarter of the work, and as close a fit (a figure is mostly flat colour).
    sample = rgb.resize((max(1, rgb.width // 2), max(1, rgb.height // 2)), Image.Resampling.NEAREST)
    q = sample.quantize(colors=n, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal = (q.getpalette() or [])[:3 * n]
    pal += [0] * (3 * n - len(pal))
    for c in KEEP_COLORS:
        pal += list(c)
    target = Image.new("P", (1, 1))
    target.putpalette(pal)
    # zlib level 8: within a few per cent of 9's bytes in a third of its time.
    rgb.quantize(palette=target, dither=Image.Dither.NONE).save(path, compress_level=8)


def fmt_lr(lr):
    return "%g" % lr


# ---- Figures per experiment ------------------------------------------------------------
# Each returns a list of (png file name, caption).


# The trajectories figure groups the optimizers by family, one column each,
# so that no panel holds more than five paths.
FAMILIES = (
    ("SGD, momentum and SAM", ("sgd", "momentum", "sam")),
    ("AdaGrad, RMSProp, AdaDelta", ("adagrad", "rmsprop", "adadelta", "rmsprop-momentum", "adadelta-momentum")),
    ("Adam and its variants", ("adam", "adamw", "radam", "nadam", "adabound")),
)


def families(names):
    """(title, [optimizer names]) for the families that have any of names, in
    the families' order; names in no family make a last column of their own."""
    out = [(title, [n for n in members if n in names]) for title, members in FAMILIES]
    known = {n for _, members in FAMILIES for n in members}
    other = [n for n in names if n not in known]
    if other:
        out.append(("others", other))
    return [(t, m) for t, m in out if m]


def exit_arrows(x, y, box, max_arrows=3, min_len=0.07, inset=0.006):
    """Arrows for where a path leaves the plot window: for each step from a
    point inside to one outside (at most max_arrows per path), (tail, head)
    in data coordinates, both inside the window, so that matplotlib draws
    them (it skips an annotation anchored outside the axes). The head is
    where the step crosses the window's edge, pulled in by `inset`; the tail
    is back along the step, at least `min_len` before the head; both in
    fractions of the window (the arrows' length on the page does not depend
    on the window's aspect). Steps to a non-finite point have no direction and
    get no arrow."""
    x0, x1, y0, y1 = box
    u = (np.asarray(x, dtype=float) - x0) / (x1 - x0)
    v = (np.asarray(y, dtype=float) - y0) / (y1 - y0)
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    out = []
    for k in np.flatnonzero(inside[:-1] & ~inside[1:]) + 1:
        pu, pv, qu, qv = u[k - 1], v[k - 1], u[k], v[k]
        if not (math.isfinite(qu) and math.isfinite(qv)):
            continue
        du, dv = qu - pu, qv - pv
        # The first edge the step crosses: the smallest t in (0, 1].
        t = 1.0
        for d, p0 in ((du, pu), (dv, pv)):
            if d > 0:
                t = min(t, (1 - p0) / d)
            elif d < 0:
                t = min(t, -p0 / d)
        n = math.hypot(du, dv)
        eu, ev = du / n, dv / n
        hu = min(max(pu + t * du - inset * eu, inset), 1 - inset)
        hv = min(max(pv + t * dv - inset * ev, inset), 1 - inset)
        length = max(math.hypot(hu - pu, hv - pv), min_len)
        tu = min(max(hu - length * eu, 0.0), 1.0)
        tv = min(max(hv - length * ev, 0.0), 1.0)
        out.append(((x0 + tu * (x1 - x0), y0 + tv * (y1 - y0)), (x0 + hu * (x1 - x0), y0 + hv * (y1 - y0))))
        if len(out) == max_arrows:
            break
    return out


def path_gap(a, b):
    """Largest distance between two paths at the same step (over the steps
    both have), or inf when they share no finite step."""
    n = min(len(a[0]), len(b[0]))
    if n == 0:
        return float("inf")
    d = np.hypot(np.asarray(a[0][:n]) - np.asarray(b[0][:n]), np.asarray(a[1][:n]) - np.asarray(b[1][:n]))
    d = d[np.isfinite(d)]
    return float(np.max(d)) if len(d) else float("inf")


# SAM's path is drawn dashed and thin on top of the others, its base's
# (SGD+momentum's) wide below it: where the two nearly coincide (the bowl),
# both stay visible. "Nearly coincide": at every step the two are closer
# than this fraction of the window's diagonal.
SAM_LINE = dict(ls=(0, (3.2, 1.8)), lw=1.0, zorder=3.6)
SAM_BASE_LW = 2.3
COINCIDE = 0.02


SURFACE_NAMES = {"bowl": "the bowl", "rosenbrock": "Rosenbrock", "beale": "Beale", "himmelblau": "Himmelblau",
                 "ill-conditioned": "the ill-conditioned quadratic"}


def _and(items):
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def fig_trajectories(run_dir, exp):
    surfaces = exp["surfaces"]
    names = list(surfaces)
    paths = {sname: group(read_csv(run_dir, surfaces[sname]["csv"]), "optimizer") for sname in names}
    opt_names = []
    for rows in paths.values():
        for o in rows:
            if o not in opt_names:
                opt_names.append(o)
    fams = families(opt_names)
    ncol, nrow = len(fams), len(names)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.7 * ncol + 0.6, 3.55 * nrow + 0.9), squeeze=False)
    labels = {}
    coincide = []  # surfaces where SAM's path nearly coincides with its base's
    for r, sname in enumerate(names):
        s = surfaces[sname]
        box = s["box"]
        diag = math.hypot(box[1] - box[0], box[3] - box[2])
        every = max(1, s["steps"] // 10)
        xy = {o: (np.array([num(p["x"]) for p in pts]), np.array([num(p["y"]) for p in pts]))
              for o, pts in paths[sname].items()}
        if "sam" in xy and "momentum" in xy and sname != "saddle" and \
                path_gap(xy["sam"], xy["momentum"]) < COINCIDE * diag:
            coincide.append(SURFACE_NAMES.get(sname, s["title"]))
        for c, (ftitle, members) in enumerate(fams):
            ax = axes[r][c]
            contour(ax, run_dir, s["grid"], levels=18, linear=(sname == "saddle"))
            for oname in members:
                pts = paths[sname].get(oname)
                if not pts:
                    continue
                color, marker = style(oname)
                x, y = xy[oname]
                line = dict(ls="-", lw=1.15, zorder=3)
                if oname == "sam":
                    line = dict(SAM_LINE)
                elif oname == "momentum" and "sam" in members and "sam" in xy:
                    line["lw"] = SAM_BASE_LW
                ax.plot(x, y, color=color, alpha=0.95, marker=marker, markersize=3.6, markevery=every,
                        markeredgewidth=0.4, markeredgecolor="k", **line)
                labels[oname] = pts[0]["label"]
                if np.nanmax(np.hypot(x - x[0], y - y[0])) < 0.02 * diag:
                    # A path that barely moves would hide under the start's dot.
                    ax.plot(x[-1], y[-1], marker, color=color, markersize=8, markeredgecolor="k", zorder=6)
                    ax.annotate("%s stays here" % pts[0]["label"].split(" (")[0], (x[-1], y[-1]), xytext=(-8, -14),
                                textcoords="offset points", fontsize=8.5, color=color, ha="right", zorder=6)
                # Where a path leaves the window: an arrow along the step, inside the window.
                # SAM's arrows small on top, its base's large below: both show where they exit together.
                scale, z = (9, 4.7) if oname == "sam" else (20 if line["lw"] == SAM_BASE_LW else 13, 4.5)
                for tail, head in exit_arrows(x, y, box):
                    ax.annotate("", xy=head, xytext=tail, zorder=z, annotation_clip=False,
                                arrowprops=dict(arrowstyle="-|>", color=color, lw=1.3, mutation_scale=scale,
                                                shrinkA=0, shrinkB=0))
            for m in s.get("minima", []):
                ax.plot(m[0], m[1], "*", color="gold", markersize=11, markeredgecolor="k", zorder=5)
            ax.plot(s["start"][0], s["start"][1], "o", color="k", markersize=5.5, zorder=5)
            ax.set_xlim(box[0], box[1])
            ax.set_ylim(box[2], box[3])
            ax.tick_params(labelsize=8)
            ax.set_title("%s, %d steps" % (s["title"], s["steps"]), fontsize=9.5)
    for c, (ftitle, members) in enumerate(fams):
        handles = [Line2D([], [], color=style(o)[0], marker=style(o)[1], markersize=5, markeredgewidth=0.4,
                          markeredgecolor="k", lw=SAM_LINE["lw"] if o == "sam" else 1.4,
                          ls=SAM_LINE["ls"] if o == "sam" else "-", label=labels.get(o, o))
                   for o in members if o in labels]
        leg = axes[0][c].legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1.31), ncol=3,
                                fontsize=8.5, frameon=False, title=ftitle, title_fontsize=10.5,
                                handlelength=2.2, columnspacing=1.2)
        leg.set_in_layout(True)
    extra = [Line2D([], [], marker="o", color="k", markersize=5.5, ls="", label="start"),
             Line2D([], [], marker="*", color="gold", markeredgecolor="k", markersize=11, ls="", label="minimum")]
    fig.legend(handles=extra, loc="lower center", ncol=2, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.0))
    src = "tuned per surface (--tune)" if exp.get("lr_source") == "tuned" else "the lab's defaults"
    fig.suptitle("Every optimizer's path, by family (learning rates: %s; markers every tenth of the steps)" % src,
                 fontsize=12.5)
    fig.tight_layout(rect=(0, 0.015, 1, 0.985), h_pad=0.9, w_pad=0.6)
    caption = ("Paths on the six surfaces, one row per surface and one column per family of optimizers (contours "
               "log-spaced, linear for the saddle; gold stars: minima; black dot: the start; a marker every tenth "
               "of the steps, so crowded markers mean slow progress; an arrow where a path leaves the window, "
               "along its step).")
    if "sam" in labels:
        caption += " SAM's path is dashed and drawn on top, its base SGD+momentum's wider below it"
        if coincide:
            caption += ("; on %s the two nearly coincide (at every step closer than %d %% of the window's "
                        "diagonal)" % (_and(coincide), round(100 * COINCIDE)))
        caption += "."
    out = [(save(fig, run_dir, "trajectories.png"), caption)]

    # Distance to the minimum against the step (the saddle: |y|, how far it escaped).
    ncol = 3
    nrow = int(math.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.2 * ncol, 3.9 * nrow))
    axes = np.atleast_1d(axes).ravel()
    for ax, sname in zip(axes, names):
        s = surfaces[sname]
        rows = paths[sname]  # read above, for the paths figure
        mins = s.get("minima", [])
        for oname, pts in rows.items():
            color, _ = style(oname)
            x = np.array([num(r["x"]) for r in pts])
            y = np.array([num(r["y"]) for r in pts])
            if mins:
                d = np.min([np.hypot(x - m[0], y - m[1]) for m in mins], axis=0)
            else:
                d = np.abs(y)
            ax.plot(np.arange(len(d)), np.maximum(d, 1e-12), color=color, lw=1.3, label=pts[0]["label"])
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("distance to nearest minimum" if mins else "|y| (escape from the saddle)")
        if mins:
            ax.axhline(exp.get("tolerance", 1e-2), color="k", ls=":", lw=0.8)
        ax.set_title(s["title"], fontsize=11)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(names):]:
        ax.axis("off")
    h, lab = axes[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=min(13, len(h)), fontsize=10, frameon=False,
               bbox_to_anchor=(0.5, -0.04))
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    out.append((save(fig, run_dir, "trajectories_distance.png"),
                "Distance to the nearest minimum against the step (log scale; dotted: the 0.01 tolerance). For "
                "the saddle, |y|: how far each optimizer has escaped."))
    return out


def fig_sam(run_dir, exp):
    rows = group(read_csv(run_dir, "sam_paths.csv"), "method")
    colors = {"gd": "#d62728", "sam": "#1f77b4"}
    labels = {"gd": "GD", "sam": "SAM (rho %g)" % exp["rho"]}
    fig, ax = plt.subplots(figsize=(8.5, 5.6))
    contour(ax, run_dir, exp["grid"], levels=30, linear=True)
    for m, pts in rows.items():
        x = [num(r["x"]) for r in pts]
        y = [num(r["y"]) for r in pts]
        ax.plot(x, y, "-o", color=colors.get(m, "k"), markersize=3, lw=1.5, label=labels.get(m, m))
        ax.plot(x[-1], y[-1], "s", color=colors.get(m, "k"), markersize=9, markeredgecolor="k")
    w = exp["wells"]
    ax.annotate("sharp well", (w[0], w[1]), xytext=(w[0] - 0.9, w[1] - 0.55), fontsize=10,
                arrowprops=dict(arrowstyle="->", lw=0.8))
    ax.annotate("flat well", (w[2], w[3]), xytext=(w[2] - 0.9, w[3] + 0.55), fontsize=10,
                arrowprops=dict(arrowstyle="->", lw=0.8))
    ax.plot(exp["start"][0], exp["start"][1], "o", color="k", markersize=8, label="start")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("GD vs SAM, lr %g, %d steps (squares: end points)" % (exp["lr"], exp["steps"]))
    ax.legend(loc="upper right")
    out = [(save(fig, run_dir, "sam_trajectories.png"),
            "The seed slides' landscape: a sharp well near (1.2, -0.8) and a flat one near (-0.6, 0.6).")]

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.4))
    for m, pts in rows.items():
        t = [int(r["step"]) for r in pts]
        a1.plot(t, [num(r["sharpness_proxy"]) for r in pts], color=colors.get(m, "k"), lw=1.6,
                label=labels.get(m, m))
        a2.plot(t, [num(r["top_eigenvalue"]) for r in pts], color=colors.get(m, "k"), lw=1.6,
                label=labels.get(m, m))
    a1.set_xlabel("step")
    a1.set_ylabel("L(w + rho g/|g|) - L(w)")
    a1.set_title("sharpness proxy along the path")
    a1.legend()
    a1.grid(alpha=0.3)
    eig = [num(r["top_eigenvalue"]) for pts in rows.values() for r in pts]
    level = exp.get("sharp_eigenvalue_level", 50)
    if min(eig) > 0:
        a2.set_yscale("log")
        scale = "log scale"
    else:  # a negative top eigenvalue (a concave region): log needs positive values
        a2.set_yscale("symlog", linthresh=1.0)
        scale = "symmetric log scale, linear within +-1"
    a2.axhline(level, color="k", ls=":", lw=1.0, label="sharp-region level (top eigenvalue %g)" % level)
    a2.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: "%g" % v))
    a2.set_xlabel("step")
    a2.set_ylabel("top eigenvalue of the Hessian (%s)" % scale.split(",")[0])
    a2.set_title("curvature along the path (%s)" % scale)
    a2.legend()
    a2.grid(alpha=0.3)
    fig.tight_layout()
    out.append((save(fig, run_dir, "sam_sharpness.png"),
                "Left: the seed's sharpness proxy at every step. Right: the Hessian's top eigenvalue (%s; dotted: "
                "the level above which a step counts as in the sharp region)." % scale))
    return out


def fig_adagrad_stall(run_dir, exp):
    rows = group(read_csv(run_dir, "adagrad_stall.csv"), "optimizer")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13.5, 4.6))
    for name, pts in rows.items():
        color, _ = style(name)
        t = np.array([int(r["step"]) for r in pts])
        med = np.array([num(r["eff_lr_median"]) for r in pts])
        q1 = np.array([num(r["eff_lr_q1"]) for r in pts])
        q3 = np.array([num(r["eff_lr_q3"]) for r in pts])
        lr = exp[name]["lr"]
        tuned = "tuned " if exp[name].get("lr_tuned") else ""
        label = "%s (%slr %s)" % (pts[0]["label"], tuned, fmt_lr(lr))
        a1.plot(t, med, color=color, lw=1.6, label=label)
        a1.fill_between(t, q1, q3, color=color, alpha=0.18, lw=0)
        d = np.array([num(r["distance"]) for r in pts])
        a2.plot(t, smooth(d, 20), color=color, lw=1.3, label=pts[0]["label"])
    for a in (a1, a2):
        a.axvline(exp["jump_at"], color="k", ls="--", lw=0.9)
        a.set_xlabel("step")
        a.grid(alpha=0.3, which="both")
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_ylabel("effective learning rate per parameter")
    a1.set_title("median over %d parameters, band: quartiles" % exp["parameters"])
    a1.legend(fontsize=9)
    a2.set_yscale("log")
    a2.set_ylabel("RMS distance to the minimum")
    a2.set_title("distance (moving average of 20 logged points); dashed: the minimum jumps")
    a2.legend(fontsize=9)
    fig.tight_layout()
    return [(save(fig, run_dir, "adagrad_stall.png"),
             "A noisy quadratic whose minimum jumps at step %d: effective learning rates (left) and the distance "
             "to the minimum (right)." % exp["jump_at"])]


def fig_bias_correction(run_dir, exp):
    table = read_csv(run_dir, "bias_correction_table.csv")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13.5, 4.6), gridspec_kw=dict(width_ratios=[1, 1.5]))
    t = [int(r["t"]) for r in table]
    a1.plot(t, [num(r["library"]) for r in table], "o-", color="#1f77b4", lw=1.5, markersize=7,
            label="library: Adam's exp_avg, gradient 1")
    a1.plot(t, [num(r["seed"]) for r in table], "x", color="#d62728", markersize=12, mew=2,
            label="the seed's table")
    for ti, v in zip(t, [num(r["library"]) for r in table]):
        a1.annotate("%.4f" % v, (ti, v), textcoords="offset points", xytext=(6, -12), fontsize=9)
    a1.set_xscale("log")
    a1.set_xticks(t)
    a1.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    a1.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    a1.set_xlim(min(t) / 1.3, max(t) * 1.3)
    a1.set_xlabel("step t (log scale)")
    a1.set_ylabel("1 - beta1^t   (beta1 = 0.9)")
    a1.set_title("the seed's bias table")
    a1.set_ylim(0, 1.08)
    a1.legend(loc="lower right")
    a1.grid(alpha=0.3, which="both")
    colors = ["#1f77b4", "#2ca02c", "#d62728", "#ff7f0e"]
    allrows = read_csv(run_dir, "bias_correction_rho.csv")
    pairs = []
    for r in allrows:
        p = (r["beta1"], r["beta2"])
        if p not in pairs:
            pairs.append(p)
    for c, p in zip(colors, pairs):
        pts = [r for r in allrows if (r["beta1"], r["beta2"]) == p]
        tt = [int(r["t"]) for r in pts]
        a2.plot(tt, [num(r["rho_library"]) for r in pts], color=c, lw=2.2, alpha=0.8,
                label="(%s, %s) measured" % p)
        a2.plot(tt, [num(r["rho_formula"]) for r in pts], color="k", lw=0.8, ls=":")
    a2.plot([], [], color="k", lw=0.8, ls=":", label="sqrt(1-beta2^t)/(1-beta1^t)")
    a2.axhline(1.0, color="0.4", lw=0.8)
    a2.set_xscale("log")
    a2.set_yscale("log")
    ticks = [0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5]
    lo, hi = a2.get_ylim()
    a2.set_yticks([v for v in ticks if lo <= v <= hi])
    a2.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    a2.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    a2.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: "%g" % v))
    a2.set_xlabel("step t (log scale)")
    a2.set_ylabel("update with / without bias correction")
    a2.set_title("implicit learning-rate multiplier rho(t)")
    a2.legend(fontsize=9, title="(beta1, beta2)")
    a2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return [(save(fig, run_dir, "bias_correction.png"),
             "Left: (1 - beta1^t) read from the library against the seed's table. Right: the ratio of Adam's "
             "update with and without bias correction, measured, with the closed form dotted.")]


def fig_units(run_dir, exp):
    rows = group(read_csv(run_dir, "units_paths.csv"), "run")
    n = len(rows)
    box = exp["box"]
    fig = plt.figure(figsize=(4.4 * n, 8.6))
    gs = fig.add_gridspec(2, n, height_ratios=[1, 1.05])
    colors = ["#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c"]
    dist_ax = fig.add_subplot(gs[1, :])
    color_handles = []
    for i, (key, pts) in enumerate(rows.items()):
        color = colors[i % 4]
        ax = fig.add_subplot(gs[0, i])
        contour(ax, run_dir, exp["grid"], levels=18)
        by_units = group(pts, "units")
        w = by_units.get("w", [])
        u = by_units.get("w/1000", [])
        # The rescaled run as points only: its jumps, joined by lines, would
        # fill the panel; points outside the window are simply not drawn.
        ux = np.array([num(r["x"]) for r in u])
        uy = np.array([num(r["y"]) for r in u])
        inside = (ux >= box[0]) & (ux <= box[1]) & (uy >= box[2]) & (uy <= box[3])
        ax.plot(ux, uy, ".", color=color, markersize=3.2, alpha=0.55, zorder=3)
        ax.plot([num(r["x"]) for r in w], [num(r["y"]) for r in w], "-", color="k", lw=2.6, zorder=4)
        ax.plot([num(r["x"]) for r in w], [num(r["y"]) for r in w], "-", color=color, lw=1.6, zorder=4)
        ax.plot(num(w[0]["x"]), num(w[0]["y"]), "o", color="k", markersize=5, zorder=5)
        info = exp[key]
        change = "diverges" if info.get("diverged") else "moves by up to %.3g %%" % (100 * info["path_change"])
        ax.set_title("%s\nwith u = w/1000 the path %s\n(%d of its %d points in view)" % (
            pts[0]["label"], change, int(inside.sum()), len(ux)), fontsize=9.5)
        ax.set_xlabel("x")
        if i == 0:
            ax.set_ylabel("y")
        ax.tick_params(labelsize=8)
        # The distances: solid optimizing w, dashed optimizing u. The
        # eps-rescaled run optimizes w exactly as plain AdaDelta does (the
        # same eps in w's units), so only its rescaled run is drawn.
        if key != "adadelta_eps_scaled":
            d = [max(num(r["distance"]), 1e-12) for r in w]
            dist_ax.plot(range(len(d)), d, "-", color=color, lw=1.5, zorder=2)
        d = [max(num(r["distance"]), 1e-12) for r in u]
        dist_ax.plot(range(len(d)), d, ls=(0, (5, 3)), color=color, lw=2.0 if key == "adadelta_eps_scaled" else 1.4,
                     zorder=3)
        color_handles.append(Line2D([], [], color=color, lw=2.5, label=pts[0]["label"]))
    style_handles = [Line2D([], [], color="k", lw=1.6, label="optimizing w"),
                     Line2D([], [], color="k", lw=1.4, ls=(0, (5, 3)), label="optimizing u = w/1000, drawn in w")]
    dist_ax.set_yscale("log")
    dist_ax.set_xscale("symlog", linthresh=10)
    dist_ax.set_xlim(0, exp.get("steps", 1000))
    lo, hi = dist_ax.get_ylim()
    dist_ax.set_ylim(max(lo, 1e-8), min(hi, 1e7))
    dist_ax.set_xlabel("step")
    dist_ax.set_ylabel("distance to the minimum (original units)")
    dist_ax.set_title("distance to the minimum; the eps-rescaled AdaDelta optimizing w is plain AdaDelta's "
                      "(purple, solid)", fontsize=10.5)
    dist_ax.legend(handles=color_handles + style_handles, fontsize=9, ncol=3, loc="lower left")
    dist_ax.grid(alpha=0.3, which="both")
    fig.legend(handles=[Line2D([], [], color="0.3", lw=1.8, label="path optimizing w"),
                        Line2D([], [], color="0.3", ls="", marker=".", markersize=7,
                               label="points optimizing u = w/1000, drawn in w")],
               loc="upper center", ncol=2, fontsize=10, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.965))
    return [(save(fig, run_dir, "units.png"),
             "The bowl x\u00b2/20 + y\u00b2 optimized in w and in u = w/1000, both drawn in the original units: "
             "top, each optimizer's path in w (line) and the points of the rescaled run (dots); bottom, the "
             "distance to the minimum of both runs.")]


def _mlp_figure(run_dir, exp, prefix, title, png):
    epochs = group(read_csv(run_dir, prefix + "_epochs.csv"), "run")
    steps = group(read_csv(run_dir, prefix + "_steps.csv"), "run")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 5.2))
    runs = list(epochs)
    # The optimizers' own colours when every run is a plain optimizer, else
    # one tab10 colour per run (variants of one optimizer must differ).
    own = all(r in STYLE for r in runs)
    palette = plt.get_cmap("tab10")
    late, early = [], []  # the smoothed losses after / before the first tenth of the steps, for the zoom
    handles = []
    window, block = 10, 1
    for i, run in enumerate(runs):
        color, marker = style(run) if own else (palette(i % 10), "o")
        label = epochs[run][0]["label"]
        sp = steps.get(run, [])
        if sp:
            s = np.array([int(r["step"]) for r in sp])
            v = smooth(np.array([num(r["loss"]) for r in sp]), window)
            a1.plot(s, v, color=color, lw=1.2)
            late.extend(x for x in v[s >= 0.1 * s[-1]] if math.isfinite(x))
            early.extend(x for x in v[s < 0.1 * s[-1]] if math.isfinite(x))
            if len(s) > 1:
                block = int(s[1] - s[0])  # steps per logged point
            if len(s) < window:
                window = 1
        e = [int(r["epoch"]) for r in epochs[run]]
        acc = [num(r["test_accuracy"]) for r in epochs[run]]
        (h,) = a2.plot(e, acc, "-", color=color, lw=1.4, marker=marker, markersize=5, markeredgewidth=0.5,
                       markeredgecolor="k", label=label)
        handles.append(h)
    a1.set_yscale("log")
    clipped = ""
    if late:
        # Zoom on where the runs differ: the first tenth of the steps (the
        # common initial drop) runs off the top.
        top = max(late) * 1.08
        a1.set_ylim(min(late) * 0.93, top)
        if any(x > top for x in early):
            clipped = "; the first tenth runs off the top"
    a1.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    a1.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    a1.tick_params(axis="y", which="both", labelsize=9.5)
    a1.set_xlabel("step")
    a1.set_ylabel("training loss (cross-entropy, log scale)")
    a1.set_title("training loss (mean over %d step%s%s)" % (block * window, "s" if block * window > 1 else "",
                                                              clipped), fontsize=10)
    a1.grid(alpha=0.3, which="both")
    a2.set_xlabel("epoch")
    a2.set_ylabel("test accuracy")
    a2.set_title("test accuracy after each epoch", fontsize=10)
    a2.grid(alpha=0.3)
    accs = [num(r["test_accuracy"]) for rs in epochs.values() for r in rs]
    finite = [a for a in accs if math.isfinite(a)]
    if finite:
        lo = max(0.0, min(finite) - 0.01)
        a2.set_ylim(lo, min(1.0, max(finite) + 0.005))
    if max((len(v) for v in epochs.values()), default=0) <= 12:
        a2.set_xticks(sorted({int(r["epoch"]) for rs in epochs.values() for r in rs}))
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=9.5, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    d = exp.get("data", {})
    fig.suptitle("%s: %s, %s on %s (%s train / %s test)" % (
        title, exp.get("model", "MLP"), "batch %d" % exp.get("batch", 0), d.get("name", "?"),
        d.get("train", "?"), d.get("test", "?")), fontsize=12)
    nrows_legend = int(math.ceil(len(handles) / 6.0))
    fig.tight_layout(rect=(0, 0.05 * nrows_legend, 1, 1))
    return save(fig, run_dir, png)


def fig_fashion_mnist(run_dir, exp):
    return [(_mlp_figure(run_dir, exp, "fashion_mnist", "Every optimizer", "fashion_mnist.png"),
             "Training loss, smoothed (left, log scale, zoomed on where the runs differ), and test accuracy after "
             "each epoch (right); one legend for both.")]


def fig_adadelta_momentum(run_dir, exp):
    return [(_mlp_figure(run_dir, exp, "adadelta_momentum", "AdaDelta with and without momentum",
                         "adadelta_momentum.png"),
             "AdaDelta, AdaDelta with heavy-ball momentum at two learning rates, RMSProp with momentum, Adam.")]


def fig_bias_ablation(run_dir, exp):
    cells = exp.get("cells", {})
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 4.8))
    groups = sorted(cells)
    keys = [("constant", "bc1", "constant lr, bias correction on"),
            ("constant", "bc0", "constant lr, bias correction off"),
            ("warmup_cosine", "bc1", "warm-up + cosine, bias correction on"),
            ("warmup_cosine", "bc0", "warm-up + cosine, bias correction off")]
    colors = ["#1f77b4", "#aec7e8", "#d62728", "#ff9896"]
    width = 0.2
    for k, (sched, bc, label) in enumerate(keys):
        xs, acc, sd, loss = [], [], [], []
        for gi, g in enumerate(groups):
            c = cells[g].get(sched, {}).get(bc)
            if not c:
                continue
            xs.append(gi + (k - 1.5) * width)
            acc.append(c["test_accuracy"] if c["test_accuracy"] is not None else float("nan"))
            sd.append(c["test_accuracy_sd"] if c.get("test_accuracy_sd") is not None else 0.0)
            loss.append(c["test_loss"] if c["test_loss"] is not None else float("nan"))
        a1.bar(xs, acc, width, yerr=sd, color=colors[k], label=label, capsize=3)
        a2.bar(xs, loss, width, color=colors[k], label=label)
    names = ["(%g, %g)" % tuple(cells[g]["constant"]["bc1"]["betas"]) for g in groups]
    for a in (a1, a2):
        a.set_xticks(range(len(groups)))
        a.set_xticklabels(names)
        a.set_xlabel("(beta1, beta2)")
        a.grid(alpha=0.3, axis="y")
    def values(field):
        return [c[s][b][field] for c in cells.values() for s in ("constant", "warmup_cosine") if s in c
                for b in ("bc0", "bc1") if b in c[s] and c[s][b].get(field) is not None]

    acc_all, loss_all = values("test_accuracy"), values("test_loss")
    if acc_all:
        a1.set_ylim(max(0, min(acc_all) - 0.02), min(1, max(acc_all) + 0.015))
    if loss_all:
        a2.set_ylim(min(loss_all) * 0.9, max(loss_all) * 1.06)
    a1.set_ylabel("test accuracy at the best lr (mean, +-1 sd over seeds)")
    a2.set_ylabel("test loss at the best lr (mean over seeds)")
    h, lab = a1.get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=4, fontsize=9.5, frameon=False, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle("Adam's bias correction, with and without warm-up + cosine (%d epochs, %d seeds, lrs %s)" % (
        exp.get("epochs", 0), exp.get("seeds", 0), ", ".join(fmt_lr(v) for v in exp.get("lrs", []))))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return [(save(fig, run_dir, "bias_ablation.png"),
             "Each bar: the best learning rate of the sweep for that cell, averaged over seeds.")]


# The storage modes of `optim lab precision`, in its order, with the long
# run's extra two (the float64 reference and plain bfloat16).
PREC_STYLE = {
    "float64": ("#000000", "", "-"),
    "fp32": ("#1f77b4", "o", "-"),
    "bf16_plain": ("#7f7f7f", "x", "-"),
    "bf16_master": ("#2ca02c", "s", "-"),
    "bf16_sr": ("#ff7f0e", "^", "-"),
    "int8_state": ("#d62728", "D", "--"),
    "int8_state_bf16_sr": ("#9467bd", "v", "--"),
    "int8_state_sr": ("#8c564b", "P", ":"),  # the long run only: int8 state with stochastic codes
}
PREC_MODES = ("fp32", "bf16_master", "bf16_sr", "int8_state", "int8_state_bf16_sr")


def fig_precision(run_dir, exp):
    rows = read_csv(run_dir, "precision_epochs.csv")
    by_mode = group(rows, "mode")
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(16, 4.9), gridspec_kw=dict(width_ratios=[1.1, 1.1, 1]))
    target = exp.get("target_points", 0.3)
    for mode in [m for m in PREC_MODES if m in by_mode]:
        color, marker, ls = PREC_STYLE[mode]
        runs = group(by_mode[mode], "seed")
        epochs = sorted({int(r["epoch"]) for r in by_mode[mode]})
        for ax, field in ((a1, "test_accuracy"), (a2, "test_loss")):
            v = np.array([[num(r[field]) for r in sorted(rs, key=lambda r: int(r["epoch"]))] for rs in runs.values()])
            ax.plot(epochs, v.mean(axis=0), ls=ls, marker=marker, color=color, lw=1.5, markersize=5,
                    label=exp.get(mode, {}).get("label", mode))
            ax.fill_between(epochs, v.min(axis=0), v.max(axis=0), color=color, alpha=0.15, lw=0)
    fp32 = exp.get("fp32", {}).get("test_accuracy")
    names = [m for m in PREC_MODES if m in exp]
    for i, mode in enumerate(names):
        color, marker, _ = PREC_STYLE[mode]
        per_seed = [a for a in exp[mode].get("test_accuracy_per_seed", []) if a is not None]
        a3.plot([i] * len(per_seed), per_seed, marker, color=color, markersize=6, alpha=0.75, ls="")
        mean = exp[mode].get("test_accuracy")
        if mean is not None:
            a3.plot([i - 0.25, i + 0.25], [mean, mean], color=color, lw=2.5)
            if mode != "fp32" and exp[mode].get("difference_vs_fp32_points") is not None:
                a3.annotate("%+.2f" % exp[mode]["difference_vs_fp32_points"], (i, mean), xytext=(14, -3),
                            textcoords="offset points", fontsize=9)
    if fp32 is not None:
        a3.axhspan(fp32 - target / 100.0, fp32 + target / 100.0, color="#1f77b4", alpha=0.12, lw=0,
                   label="fp32 mean +- %g points (the target)" % target)
        a3.axhline(fp32, color="#1f77b4", lw=0.8, ls=":")
        a3.legend(fontsize=8.5, loc="lower left")
    a3.set_xticks(range(len(names)))
    a3.set_xticklabels([n.replace("_", "\n", 1) if n != "int8_state_bf16_sr" else "int8_state\nbf16_sr"
                        for n in names], fontsize=8.5)
    a3.set_ylabel("final test accuracy")
    a3.set_title("final epoch: each seed (dots), the mean (bar), points vs fp32", fontsize=10)
    a1.set_ylabel("test accuracy")
    a1.set_title("test accuracy after each epoch (mean, band: min to max over seeds)", fontsize=10)
    a2.set_ylabel("test loss")
    a2.set_title("test loss after each epoch (mean, band: min to max)", fontsize=10)
    all_epochs = sorted({int(r["epoch"]) for r in rows})
    for ax in (a1, a2):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(all_epochs) <= 12:
            ax.set_xticks(all_epochs)
    a3.grid(alpha=0.3, axis="y")
    a1.legend(fontsize=8.5, loc="lower right")
    d = exp.get("data", {})
    fig.suptitle("Adam (lr %g) on %s (%s train / %s test), %s epochs, seeds %s: storage modes" % (
        exp.get("lr", 0), d.get("name", "?"), d.get("train", "?"), d.get("test", "?"), exp.get("epochs", "?"),
        ", ".join("%d" % s for s in exp.get("seeds", []))), fontsize=11.5)
    fig.tight_layout()
    out = [(save(fig, run_dir, "precision.png"),
            "The same MLP, initialisation, data order and learning rate in each storage mode; bfloat16 modes train "
            "a bfloat16 model (the forward and backward passes read the bfloat16 weights). Right: the shaded band "
            "is the issue's target, fp32's mean +- %g points." % target)]

    syn = exp.get("synthetic", {})
    cases = syn.get("cases", {})
    long_rows = group(read_csv(run_dir, "precision_long.csv"), "case")
    fig, axes = plt.subplots(len(cases), 2, figsize=(14, 4.3 * len(cases)), squeeze=False)
    for r, (cname, c) in enumerate(cases.items()):
        runs = group(long_rows.get(cname, []), "run")
        for name, pts in runs.items():
            color, _, ls = PREC_STYLE.get(name, ("#333333", "", "-"))
            t = np.array([int(p["step"]) for p in pts])
            label = c.get("runs", {}).get(name, {}).get("label", name)
            lw = 2.4 if name == "float64" else 1.3
            axes[r][0].plot(t, np.maximum([num(p["distance_to_optimum"]) for p in pts], 1e-12), color=color, ls=ls,
                            lw=lw, label=label, alpha=0.9)
            if name != "float64":
                # Zero at the start (every run starts at 0): not drawn on the log scale.
                d = np.array([num(p["distance_to_float64"]) for p in pts])
                d[~(d > 0)] = np.nan
                axes[r][1].plot(t, d, color=color, ls=ls, lw=1.3, label=label, alpha=0.9)
        for a in axes[r]:
            a.axhline(c.get("bf16_floor", 0) or 1e-12, color="k", ls=":", lw=0.9,
                      label="bfloat16 grid floor (RMS of w* - bf16(w*))")
            if cname == "scale_drop":
                a.axvline(syn.get("drop_at", 0), color="k", ls="--", lw=0.9)
            a.set_yscale("log")
            a.set_xlabel("step")
            a.grid(alpha=0.3, which="both")
        axes[r][0].set_ylabel("RMS distance to the optimum")
        axes[r][1].set_ylabel("RMS distance to the float64 iterate")
        axes[r][0].set_title("%s: %s" % (cname, c.get("title", "")), fontsize=10)
        axes[r][1].set_title("%s: distance to the float64 run on the same noise" % cname, fontsize=10)
    if cases:
        axes[0][0].legend(fontsize=8.5, loc="upper right", ncol=2)
    fig.suptitle("Adam (lr %g) on a noisy quadratic, %s coordinates, %s steps; every storage mode in lockstep with "
                 "the library's float64 run" % (syn.get("lr", 0), syn.get("n", "?"), syn.get("steps", "?")),
                 fontsize=11.5)
    fig.tight_layout()
    out.append((save(fig, run_dir, "precision_long.png"),
                "Top: from 0 to an optimum of magnitude 1 to 3; plain bfloat16 (nearest rounding, no master, no "
                "stochastic rounding) stops where an update falls below half an ulp. Bottom: converged, then at the "
                "dashed line the gradients of the odd coordinates fall %gx and the optimum moves by %g; the 8-bit "
                "second moment of those coordinates cannot decay with them under nearest rounding, and does "
                "with stochastically rounded codes (int8_state_sr)." % (syn.get("drop_factor", 1000),
                                                                                 syn.get("shift", 0.5))))
    return out


def fig_modern(run_dir, exp):
    rules = exp.get("rules", [])
    labels = {r: exp.get(r, {}).get("label", r) for r in rules}
    surfaces = exp.get("surfaces", {})
    names = list(surfaces)
    out = []
    if names:
        ncol = 3
        nrow = int(math.ceil(len(names) / ncol))
        fig, axes = plt.subplots(nrow, ncol, figsize=(6.0 * ncol, 4.3 * nrow + 0.6), squeeze=False)
        axes = axes.ravel()
        for ax, sname in zip(axes, names):
            s = surfaces[sname]
            box = s["box"]
            rows = group(read_csv(run_dir, s["csv"]), "optimizer")
            contour(ax, run_dir, s["grid"], levels=18, linear=(sname == "saddle"))
            every = max(1, s["steps"] // 10)
            for r in rules:
                pts = rows.get(r)
                if not pts:
                    continue
                color, marker = style(r)
                x = np.array([num(p["x"]) for p in pts])
                y = np.array([num(p["y"]) for p in pts])
                ax.plot(x, y, color=color, lw=1.2, marker=marker, markersize=3.6, markevery=every,
                        markeredgewidth=0.4, markeredgecolor="k", alpha=0.95, zorder=3,
                        label="%s (lr %s)" % (labels[r], fmt_lr(num(pts[0]["lr"]))))
                for tail, head in exit_arrows(x, y, box):
                    ax.annotate("", xy=head, xytext=tail, zorder=4.5, annotation_clip=False,
                                arrowprops=dict(arrowstyle="-|>", color=color, lw=1.3, mutation_scale=13,
                                                shrinkA=0, shrinkB=0))
            for m in s.get("minima", []):
                ax.plot(m[0], m[1], "*", color="gold", markersize=11, markeredgecolor="k", zorder=5)
            ax.plot(s["start"][0], s["start"][1], "o", color="k", markersize=5.5, zorder=5)
            ax.set_xlim(box[0], box[1])
            ax.set_ylim(box[2], box[3])
            ax.tick_params(labelsize=8)
            ax.set_title("%s, %d steps" % (s["title"], s["steps"]), fontsize=10)
            ax.legend(fontsize=7, loc="lower left", framealpha=0.75)
        for ax in axes[len(names):]:
            ax.axis("off")
        fig.suptitle("Each rule's path at its tuned learning rate (per surface; markers every tenth of the steps)",
                     fontsize=12)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        out.append((save(fig, run_dir, "modern_trajectories.png"),
                    "The surfaces of trajectories; each rule's lr chosen per surface by a grid search (closest "
                    "final point to a minimum; the saddle takes the bowl's), given in the legend. Gold stars: "
                    "minima; black dot: the start; an arrow where a path leaves the window."))

    # Fashion-MNIST: accuracy per epoch at the chosen lr, the lr sweep on validation, the seeds.
    rows = read_csv(run_dir, "modern_epochs.csv")
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(17, 5.0), gridspec_kw=dict(width_ratios=[1.1, 1.1, 1]))
    for r in rules:
        o = exp.get(r, {})
        color, marker = style(r)
        chosen = o.get("lr")
        mine = [x for x in rows if x["rule"] == r]
        at = [x for x in mine if chosen is not None and math.isclose(num(x["lr"]), chosen, rel_tol=1e-6)]
        by_seed = group(at, "seed")
        if by_seed:
            epochs = sorted({int(x["epoch"]) for x in at})
            v = np.array([[num(x["test_accuracy"]) for x in sorted(rs, key=lambda q: int(q["epoch"]))]
                          for rs in by_seed.values() if len(rs) == len(epochs)])
            if v.size:
                a1.plot(epochs, np.nanmean(v, axis=0), color=color, marker=marker, markersize=5, lw=1.4,
                        markeredgewidth=0.4, markeredgecolor="k", label="%s (lr %s)" % (labels[r], fmt_lr(chosen)))
        grid = o.get("lr_grid", [])
        val = [np.nan if a is None else a for a in o.get("val_accuracy_per_lr", [])]
        if grid:
            a2.plot(grid, val, color=color, marker=marker, markersize=5, lw=1.2, markeredgewidth=0.4,
                    markeredgecolor="k", label=labels[r])
            if chosen is not None and chosen in grid:
                a2.plot([chosen], [val[grid.index(chosen)]], "o", ms=11, mfc="none", mec=color, mew=1.6)
    names_ = [r for r in rules if r in exp]
    for i, r in enumerate(names_):
        color, marker = style(r)
        per_seed = [a for a in exp[r].get("test_accuracy_per_seed", []) if a is not None]
        a3.plot([i] * len(per_seed), per_seed, marker, color=color, markersize=6, alpha=0.8, ls="",
                markeredgecolor="k", markeredgewidth=0.4)
        mean = exp[r].get("test_accuracy")
        ema = exp[r].get("ema_test_accuracy")
        if ema is not None:  # the EMA of the weights (none for the schedule-free rules)
            a3.plot([i - 0.3, i + 0.3], [ema, ema], color=color, lw=1.4, ls=(0, (2, 1.5)))
        if mean is not None:
            a3.plot([i - 0.25, i + 0.25], [mean, mean], color=color, lw=2.5)
            verdict_ = exp[r].get("verdict", "")
            a3.annotate(verdict_, (i, mean), xytext=(0, 8), textcoords="offset points", ha="center", fontsize=8)
    a3.set_xticks(range(len(names_)))
    a3.set_xticklabels([labels[r] for r in names_], fontsize=8.5, rotation=20)
    a3.set_ylabel("final test accuracy")
    a3.set_title("each seed (dots), the mean (bar), the EMA of the weights (dashed), verdict vs AdamW",
                 fontsize=9.5)
    all_epochs = sorted({int(x["epoch"]) for x in rows})
    if len(all_epochs) <= 12:
        a1.set_xticks(all_epochs)
    a1.set_xlabel("epoch")
    a1.set_ylabel("test accuracy (mean of the seeds)")
    a1.set_title("test accuracy after each epoch at the chosen lr", fontsize=10)
    a2.set_xscale("log")
    a2.set_xlabel("learning rate")
    a2.set_ylabel("final validation accuracy (first seed)")
    a2.set_title("the lr grids on the validation split (circled: chosen)", fontsize=10)
    for a in (a1, a2, a3):
        a.grid(alpha=0.3)
    a1.legend(fontsize=8, loc="lower right")
    a2.legend(fontsize=8, loc="lower left")
    d = exp.get("data", {})
    fig.suptitle("%s on %s (%s train, %s held out for validation, %s test), %s epochs, seeds %s" % (
        exp.get("model", "MLP"), d.get("name", "?"), d.get("train_used", "?"), d.get("validation", "?"),
        d.get("test", "?"), exp.get("epochs", "?"), ", ".join("%d" % s for s in exp.get("seeds", []))),
        fontsize=11.5)
    fig.tight_layout()
    out.append((save(fig, run_dir, "modern_mnist.png"),
                "Left: test accuracy per epoch at each rule's chosen lr (mean of 3 seeds). Middle: the final "
                "validation accuracy of each lr of the grid with the first seed; the chosen lr is circled (the "
                "test set never chooses). Right: the seeds' final test accuracies and each rule's verdict "
                "against AdamW (ahead/level/behind: the difference of means against twice its standard error); "
                "dashed: the mean test accuracy of the EMA of the weights (decay %s%s, kept in the step and "
                "swapped in to evaluate; the schedule-free rules have none: they are evaluated at x, itself an "
                "average)." % (exp.get("ema", {}).get("decay", "?"),
                               " with warm-up" if exp.get("ema", {}).get("warmup") else "")))

    # The update/weight RMS ratio per layer over training (first seed, chosen lr).
    ratio_rows = read_csv(run_dir, "modern_ratio.csv")
    tensors = exp.get("tensors", [])
    seed0 = str(exp.get("seeds", [1])[0]) if exp.get("seeds") else None
    if tensors:
        fig, axes = plt.subplots(1, len(tensors), figsize=(4.6 * len(tensors), 4.2), squeeze=False)
        axes = axes[0]
        by_rule = group(ratio_rows, "rule")
        for r in rules:
            chosen = exp.get(r, {}).get("lr")
            color, _ = style(r)
            pts = [x for x in by_rule.get(r, []) if x["seed"] == seed0 and chosen is not None and
                   math.isclose(num(x["lr"]), chosen, rel_tol=1e-6)]
            by_t = group(pts, "tensor")
            for ax, tname in zip(axes, tensors):
                tp = by_t.get(tname, [])
                if not tp:
                    continue
                st = np.array([int(x["step"]) for x in tp])
                v = np.array([num(x["update_weight_ratio"]) for x in tp])
                v[~(v > 0)] = np.nan
                ax.plot(st, smooth(v, 5), color=color, lw=1.2, label=labels[r], marker="o" if len(st) < 5 else None,
                        markersize=4)
        for ax, tname in zip(axes, tensors):
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.set_title(tname, fontsize=10)
            ax.grid(alpha=0.3, which="both")
        axes[0].set_ylabel("RMS(update) / RMS(weights), one step")
        h, lab = axes[0].get_legend_handles_labels()
        fig.legend(h, lab, loc="lower center", ncol=min(10, len(h)), fontsize=9, frameon=False,
                   bbox_to_anchor=(0.5, -0.02))
        fig.suptitle("The size of each step relative to the weights, per tensor (first seed, chosen lr; "
                     "every %s steps, smoothed over 5 samples)" % exp.get("ratio_every", "?"), fontsize=11.5)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        out.append((save(fig, run_dir, "modern_ratio.png"),
                    "RMS(p after - p before) / RMS(p before) of one step, per tensor, measured by the library's "
                    "step statistics in the step's own pass (optim_set_stats for the sampled steps; "
                    "modern_ratio.csv also holds each sample's gradient norm, effective lr and trust ratio). "
                    "Sign-based Lion "
                    "and the trust-ratio rules LAMB/LARS set this ratio by design, and so does Muon on the weight "
                    "matrices (its orthogonalised step has singular values near 1, times lr; its biases are the "
                    "auxiliary AdamW's); Adam-type steps follow the gradient's signal-to-noise."))
    return out


FIGURES = {
    "trajectories": fig_trajectories,
    "sam": fig_sam,
    "adagrad-stall": fig_adagrad_stall,
    "bias-correction": fig_bias_correction,
    "units": fig_units,
    "fashion-mnist": fig_fashion_mnist,
    "adadelta-momentum": fig_adadelta_momentum,
    "bias-ablation": fig_bias_ablation,
    "precision": fig_precision,
    "modern": fig_modern,
}

# What each figure shows, and where the claim comes from (fixed text; the
# verdict and its numbers come from the run).
ABOUT = {
    "trajectories": "Each optimizer of the library from the same start on six classic surfaces: the textbook "
                    "bowl x\u00b2/20 + y\u00b2 from (-7, 2), Rosenbrock from (-2, 2), Beale from (3, 4), Himmelblau "
                    "(four minima) from near its central maximum, the saddle x\u00b2 - y\u00b2 from (1, 0.001), and "
                    "an ill-conditioned quadratic (x\u00b2 + 100y\u00b2)/2.",
    "sam": "The seed slides' figure: plain gradient descent against SAM (the library's optim_sam around the same "
           "SGD) on a landscape with a sharp and a flat well, and the sharpness proxy L(w + rho g/|g|) - L(w) "
           "along each path.",
    "adagrad-stall": "The effective per-parameter learning rate of AdaGrad, RMSProp, Adam and AdaDelta over a "
                     "long noisy run, read from the library's optimizer state, and how each follows a minimum "
                     "that moves half-way through.",
    "bias-correction": "The seed's table of (1 - beta1^t), read from the library's Adam state, and the implicit "
                       "learning-rate multiplier rho(t) that bias correction applies (Laing & Orvieto 2025).",
    "units": "The seed's argument that AdaDelta's update has the units of the parameters: the same problem "
             "optimized in parameters expressed in units 1000 times larger, drawn back in the original units.",
    "fashion-mnist": "A ReLU MLP trained by every optimizer of the library, and by SAM around SGD+momentum, with "
                     "the same initialisation and data order.",
    "adadelta-momentum": "The seed's open question, why AdaDelta with momentum never caught on: AdaDelta with the "
                         "library's optional heavy-ball momentum, against plain AdaDelta, RMSProp with momentum "
                         "and Adam.",
    "bias-ablation": "Adam with and without bias correction, under a constant learning rate and under linear "
                     "warm-up + cosine decay, for three (beta1, beta2) pairs, a learning-rate sweep and several "
                     "seeds.",
    "precision": "What reduced precision costs (issue 12): the library's Adam training the MLP with bfloat16 "
                 "weights and gradients (with an fp32 master copy, or stochastic rounding) and with 8-bit "
                 "block-quantized state, against float32, three seeds each; then a long synthetic run of every "
                 "mode against the library's float64 path.",
    "modern": "The rules practitioners reach for today (issue 13: Lion, LAMB, LARS, schedule-free SGD/AdamW, "
              "Muon with an AdamW for the biases; Adafactor as it lands) next to AdamW, Adam and SGD+momentum: "
              "on the 2-D surfaces at a tuned lr, and training the MLP with each lr chosen from a small grid on "
              "a validation split held out of the training images, three seeds at that lr, the update/weight "
              "ratio of every layer over training, and a verdict per rule against AdamW computed from the seeds.",
}


# ---- The report -------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2.2em; }
.sub { color: #666; }
.claim { border-left: 5px solid #999; background: #f7f7f7; padding: 0.6em 1em; margin: 1em 0; }
.claim.held { border-color: #2ca02c; background: #f0f8f0; }
.claim.failed { border-color: #d62728; background: #fbf0f0; }
.claim.mixed { border-color: #ff7f0e; background: #fdf6ec; }
.badge { font-weight: bold; font-size: 0.85em; padding: 0.1em 0.5em; border-radius: 3px; color: white; }
.badge.held { background: #2ca02c; } .badge.failed { background: #d62728; } .badge.mixed { background: #ff7f0e; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }
th { background: #f2f2f2; }
.files { color: #666; font-size: 0.85em; }
.note { border-left: 5px solid #ff7f0e; background: #fdf6ec; padding: 0.4em 1em; }
.toc a { margin-right: 1em; }
.meta td:first-child { font-weight: bold; }
"""


def esc(s):
    return html.escape(str(s), quote=True)


def img_tag(run_dir, name):
    with open(os.path.join(run_dir, name), "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return '<img src="data:image/png;base64,%s" alt="%s">' % (data, esc(name))


def table_html(t):
    out = ["<table><caption>%s</caption><tr>" % esc(t.get("title", ""))]
    out += ["<th>%s</th>" % esc(c) for c in t.get("columns", [])]
    out.append("</tr>")
    for row in t.get("rows", []):
        out.append("<tr>" + "".join("<td>%s</td>" % esc(c) for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def verdict(finding):
    held = finding.get("held")
    if held is True:
        return "held", "the seed's claim held"
    if held is False:
        return "failed", "the seed's claim did not hold"
    return "mixed", "mixed / open question"


def section(run_dir, name, exp, figures):
    key = name
    parts = ['<h2 id="%s">%s</h2>' % (esc(key), esc(exp.get("title", name)))]
    parts.append("<p>%s <span class=\"sub\">(experiment <code>%s</code>, %.1f s)</span></p>" % (
        esc(ABOUT.get(name, "")), esc(name), exp.get("seconds") or 0.0))
    fallback = (exp.get("data") or {}).get("fallback")
    if fallback:
        # The automatic fallback (no --data, no --dataset): said where the numbers are.
        parts.append('<p class="note"><b>Data set:</b> %s.</p>' % esc(fallback))
    finding = exp.get("finding")
    if finding:
        cls, word = verdict(finding)
        parts.append('<div class="claim %s"><b>Claim checked:</b> %s <span class="badge %s">%s</span><br>%s</div>' % (
            cls, esc(finding.get("claim", "")), cls, esc(word), esc(finding.get("statement", ""))))
    for png, caption in figures:
        parts.append("<figure>%s<figcaption>%s</figcaption></figure>" % (img_tag(run_dir, png), esc(caption)))
    for t in (exp.get("tables") or {}).values():
        parts.append(table_html(t))
    files = exp.get("files") or []
    if files:
        parts.append('<p class="files">Data: %s</p>' % ", ".join(
            '<a href="%s">%s</a>' % (esc(f), esc(f)) for f in sorted(set(files))))
    return "\n".join(parts)


def meta_html(meta):
    rows = []

    def add(k, v):
        rows.append("<tr><td>%s</td><td>%s</td></tr>" % (esc(k), esc(v)))

    add("command", " ".join(meta.get("command", [])))
    add("started (UTC)", meta.get("started", ""))
    add("duration", "%.1f s" % (meta.get("seconds") or 0))
    add("seed", meta.get("seed", ""))
    add("options", json.dumps(meta.get("options", {}), ensure_ascii=False))
    add("optim", "%s (header %s), git %s" % (meta.get("optim_version"), meta.get("optim_header_version"),
                                             meta.get("git_commit")))
    add("CPU path", meta.get("cpu_path", ""))
    add("threads", "%s (OpenBLAS %s)" % (meta.get("threads"), meta.get("openblas_threads")))
    add("OpenBLAS", meta.get("openblas", ""))
    add("zlib", meta.get("zlib", ""))
    add("compiler", meta.get("compiler", ""))
    m = meta.get("machine", {})
    add("machine", "%s; %s; %s cores; %.1f GB" % (m.get("os", "?"), m.get("cpu", "?"), m.get("cores", "?"),
                                                 m.get("memory_gb") or 0))
    add("renderer", "Python %s, matplotlib %s, numpy %s" % (sys.version.split()[0], matplotlib.__version__,
                                                           np.__version__))
    return '<table class="meta">%s</table>' % "".join(rows)


def render(run_dir):
    """Render run_dir; returns the path of report.html. Raises BadRun."""
    path = os.path.join(run_dir, "summary.json")
    try:
        with open(path) as f:
            summary = json.load(f)
    except OSError as exc:
        raise BadRun("%s: %s" % (path, exc.strerror))
    except ValueError as exc:
        raise BadRun("%s is not valid JSON: %s" % (path, exc))
    if summary.get("status") != "complete":
        raise BadRun("%s: the run's status is %r, not complete: no report for a partial run" % (
            path, summary.get("status")))
    names = summary.get("experiments", [])
    sections, toc = [], []
    for name in names:
        key = name.replace("-", "_")
        exp = summary.get(key)
        if exp is None:
            raise BadRun("%s lists experiment %s but has no %r object" % (path, name, key))
        draw = FIGURES.get(name)
        if draw is None:
            raise BadRun("no figure code for experiment %r" % name)
        # Figures laid out at the resolution they are saved at: tight_layout and save's crop then
        # measure the text with one renderer (and its cache).
        with matplotlib.rc_context({"figure.dpi": DPI}):
            figures = draw(run_dir, exp)
        sections.append(section(run_dir, name, exp, figures))
        toc.append('<a href="#%s">%s</a>' % (esc(name), esc(name)))
    meta = summary.get("meta", {})
    held = [summary[n.replace("-", "_")].get("finding", {}).get("held") for n in names]
    overview = "%d experiment%s: %d claim%s held, %d did not, %d mixed or open." % (
        len(names), "" if len(names) == 1 else "s", held.count(True), "" if held.count(True) == 1 else "s",
        held.count(False), sum(1 for h in held if h is None))
    doc = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>optim lab: %s</title><style>%s</style></head>
<body>
<h1>optim lab</h1>
<p class="sub">Run <code>%s</code>, optim %s, seed %s, %s. %s</p>
<p class="toc">%s <a href="#meta">run details</a></p>
%s
<h2 id="meta">Run details</h2>
%s
</body></html>
""" % (esc(meta.get("run", "")), CSS, esc(meta.get("run", "")), esc(meta.get("optim_version", "")),
       esc(meta.get("seed", "")), esc(meta.get("started", "")), esc(overview), " ".join(toc), "\n".join(sections),
       meta_html(meta))
    # Written under a temporary name, then renamed: never half a report.
    fd, tmp = tempfile.mkstemp(prefix=".report.", suffix=".tmp", dir=run_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(doc)
    out = os.path.join(run_dir, "report.html")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return out


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet = "--quiet" in argv
    if quiet:
        argv.remove("--quiet")
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python3 -m optim.lab.render [--quiet] <run directory of optim lab>", file=sys.stderr)
        return EXIT_BAD_INPUT if not argv or argv[0] not in ("-h", "--help") else 0
    if _IMPORT_ERROR is not None:
        print("optim.lab.render: %s; install Debian's python3-matplotlib and python3-numpy and use "
              "/usr/bin/python3" % _IMPORT_ERROR, file=sys.stderr)
        return EXIT_NO_MATPLOTLIB
    try:
        out = render(argv[0])
    except BadRun as exc:
        print("optim.lab.render: %s" % exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    if not quiet:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
