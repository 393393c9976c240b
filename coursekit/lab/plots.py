"""Figures shared by the lessons: which axes a normalization reduces, activation histograms, curves.

Every function draws with matplotlib's object API (never ``plt.show``) and returns the ``Figure``
or ``Axes`` it drew on, so notebooks display it and tests inspect it without a display.

* ``reduced_mask`` / ``plot_norm_axes`` / ``plot_norm_family``: the (N, C, H*W) block of Wu & He's
  Group Norm paper (2018, figure 2) with the elements of one normalized group highlighted
  (lessons 02 and 05);
* ``plot_book_stack``: the "stack of books" picture of BatchNorm's statistics (lesson 02);
* ``plot_layer_histograms``: a grid of per-layer histograms (lesson 01);
* ``plot_curves``: loss curves, one line per run with the mean over runs on top (lesson 01);
* ``plot_fit``: data points and fitted curves of a 1-D regression (lesson 01);
* ``plot_distributions``: overlaid histograms of a few samples, e.g. before and after BN (lesson 01).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "NORM_KINDS", "reduced_mask", "plot_norm_axes", "plot_norm_family", "plot_book_stack",
    "plot_layer_histograms", "plot_curves", "plot_fit", "plot_distributions", "finish_axes",
]

#: The normalizations ``plot_norm_axes`` draws, with their figure titles.
NORM_KINDS = {"batch": "Batch Norm", "layer": "Layer Norm", "instance": "Instance Norm", "group": "Group Norm"}

HIGHLIGHT = "#4C8BF5"   # reduced elements of the highlighted group
PLAIN = "#F2F2F2"       # every other element
EDGE = "#555555"
# Oblique projection of the depth (C) axis: each step back moves right and up by these amounts.
_DEPTH_DX, _DEPTH_DY = 0.45, 0.35


def _to_numpy(t) -> np.ndarray:
    """A flat float array from a tensor (detached) or anything numpy accepts."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=float).ravel()


def _check_kind(kind) -> str:
    if kind not in NORM_KINDS:
        raise ValueError(f"expected kind to be one of {sorted(NORM_KINDS)} (got {kind!r})")
    return kind


def _block_shape(shape) -> tuple[int, int, int]:
    """(N, C, H, W) or (N, C, HW) -> (N, C, HW), with a clear error for anything else."""
    try:
        dims = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"expected shape to be a tuple (N, C, H, W) or (N, C, HW) (got {shape!r})") from None
    if len(dims) not in (3, 4) or any(d < 1 for d in dims):
        raise ValueError(f"expected shape (N, C, H, W) or (N, C, HW) of positive sizes (got {shape!r})")
    if len(dims) == 4:
        return dims[0], dims[1], dims[2] * dims[3]
    return dims  # type: ignore[return-value]


def reduced_mask(kind: str, shape: Sequence[int] = (4, 6, 3, 2), num_groups: int = 2) -> np.ndarray:
    """Which elements of an (N, C, H*W) block share one mean and variance with the element [0, 0, 0].

    Introduced in lesson 02 (batch) and lesson 05 (the family). The statistics of that group are
    computed over exactly the ``True`` elements:

    * ``"batch"``: channel 0 of every sample, every position (reduces N, H, W);
    * ``"layer"``: every channel and position of sample 0 (reduces C, H, W);
    * ``"instance"``: channel 0 of sample 0 (reduces H, W);
    * ``"group"``: the first ``C // num_groups`` channels of sample 0 (reduces a group of C, and H, W).

    Args:
        kind: ``"batch"``, ``"layer"``, ``"instance"`` or ``"group"``.
        shape: (N, C, H, W) or (N, C, H*W). Default: (4, 6, 3, 2).
        num_groups: groups for ``"group"``; must divide C. Default: 2.

    Returns:
        A boolean array of shape (N, C, H*W).

    Example::

        >>> reduced_mask("batch", (2, 3, 2, 2)).sum()   # N * H * W elements
        8
    """
    _check_kind(kind)
    n, c, hw = _block_shape(shape)
    mask = np.zeros((n, c, hw), dtype=bool)
    if kind == "batch":
        mask[:, 0, :] = True
    elif kind == "layer":
        mask[0, :, :] = True
    elif kind == "instance":
        mask[0, 0, :] = True
    else:
        if not isinstance(num_groups, (int, np.integer)) or num_groups < 1 or c % num_groups:
            raise ValueError(f"expected num_groups to be a positive int dividing C={c} (got {num_groups!r})")
        mask[0, : c // num_groups, :] = True
    return mask


def plot_norm_axes(kind: str, ax=None, shape: Sequence[int] = (4, 6, 3, 2), num_groups: int = 2):
    """Draw the (N, C, H*W) block with the elements one normalized group reduces over highlighted.

    Introduced in lesson 02 (``"batch"``) and used for the whole family in lesson 05. The block is
    the figure of Wu & He, *Group Normalization* (2018): samples N run left to right, channels C go
    back into the page, and the spatial positions H*W are flattened onto the vertical axis. Only the
    three visible faces are drawn; every visible cell of the highlighted group is a patch with
    ``gid="reduced"`` (the others have ``gid="other"``), which is what tests count.

    Args:
        kind: ``"batch"``, ``"layer"``, ``"instance"`` or ``"group"``.
        ax: axes to draw on; a new figure is made when None. Default: None.
        shape: (N, C, H, W) or (N, C, H*W). Default: (4, 6, 3, 2).
        num_groups: groups for ``"group"``; must divide C. Default: 2.

    Returns:
        The ``Axes`` drawn on, titled like ``"Batch Norm"``.

    Example::

        >>> ax = plot_norm_axes("batch")
        >>> ax.get_title()
        'Batch Norm'
    """
    from matplotlib.patches import Polygon

    mask = reduced_mask(kind, shape, num_groups)
    n, c, hw = mask.shape
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(3.2, 3.2))
    ddx, ddy = _DEPTH_DX, _DEPTH_DY

    def add(corners, reduced: bool) -> None:
        ax.add_patch(Polygon(corners, closed=True, facecolor=HIGHLIGHT if reduced else PLAIN,
                             edgecolor=EDGE, linewidth=0.6, gid="reduced" if reduced else "other"))

    # Front face (channel 0): sample i, position s (s = 0 at the top).
    for i in range(n):
        for s in range(hw):
            y0 = hw - 1 - s
            add([(i, y0), (i + 1, y0), (i + 1, y0 + 1), (i, y0 + 1)], mask[i, 0, s])
    # Top face (position 0): sample i, channel k going back.
    for i in range(n):
        for k in range(c):
            x0, y0 = i + k * ddx, hw + k * ddy
            add([(x0, y0), (x0 + 1, y0), (x0 + 1 + ddx, y0 + ddy), (x0 + ddx, y0 + ddy)], mask[i, k, 0])
    # Right face (last sample): channel k going back, position s.
    for k in range(c):
        for s in range(hw):
            x0, y0 = n + k * ddx, hw - 1 - s + k * ddy
            add([(x0, y0), (x0 + ddx, y0 + ddy), (x0 + ddx, y0 + 1 + ddy), (x0, y0 + 1)], mask[n - 1, k, s])

    style = dict(fontsize=10, ha="center", va="center")
    ax.text(n / 2, -0.6, "N", **style)
    ax.text(-0.6, hw / 2, "H, W", rotation=90, **style)
    ax.text(n + c * ddx / 2 + 0.45, c * ddy / 2 - 0.45, "C", **style)  # below the bottom-right edge
    ax.set_xlim(-1.2, n + c * ddx + 0.9)
    ax.set_ylim(-1.1, hw + c * ddy + 0.9)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(NORM_KINDS[kind])
    return ax


def plot_norm_family(shape: Sequence[int] = (4, 6, 3, 2), num_groups: int = 2):
    """The four normalizations side by side: Batch, Layer, Instance and Group Norm.

    Introduced in lesson 05; one call of ``plot_norm_axes`` per kind on a shared figure.

    Args:
        shape: (N, C, H, W) or (N, C, H*W) of every block. Default: (4, 6, 3, 2).
        num_groups: groups of the Group Norm panel. Default: 2.

    Returns:
        A ``Figure`` with four axes, in the order batch, layer, instance, group.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(NORM_KINDS), figsize=(3.0 * len(NORM_KINDS), 3.2))
    for kind, ax in zip(NORM_KINDS, axes):
        plot_norm_axes(kind, ax=ax, shape=shape, num_groups=num_groups)
    fig.tight_layout()
    return fig


def plot_book_stack(n_books: int = 4, n_pages: int = 3, page: int = 0, ax=None,
                    lines: int = 4, chars: int = 5):
    """BatchNorm's statistics as a stack of books: one mean per page number, over every book.

    Introduced in lesson 02. Book ``i`` is sample ``i`` of a batch, page ``k`` is channel ``k`` and
    the text on a page is its H x W values (``lines`` x ``chars``, drawn as a grid on the front
    page). The mean of channel ``page`` averages that page of every book (N x H x W characters);
    those pages are the patches with ``gid="reduced"``. On the right, the "average book": one
    number per page, the vector of per-channel means (patches with ``gid="mean"``).

    Args:
        n_books: N, the batch size. Default: 4.
        n_pages: C, the channels. Default: 3.
        page: the channel whose statistics are highlighted. Default: 0.
        ax: axes to draw on; a new figure is made when None. Default: None.
        lines, chars: H and W of the grid drawn on each front page. Default: 4, 5.

    Returns:
        The ``Axes`` drawn on.

    Example::

        >>> ax = plot_book_stack(n_books=4, n_pages=3, page=0)
    """
    from matplotlib.patches import FancyArrowPatch, Rectangle

    for value, name in ((n_books, "n_books"), (n_pages, "n_pages"), (lines, "lines"), (chars, "chars")):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"expected {name} to be a positive int (got {value!r})")
    if not isinstance(page, (int, np.integer)) or not 0 <= page < n_pages:
        raise ValueError(f"expected page in 0..{n_pages - 1} (got {page!r})")
    width, height, shift, gap = 1.0, 1.3, 0.2, 0.55  # pages of one book fan out up and to the right
    step = width + shift * n_pages + gap
    mean_x = n_books * step + 0.9                     # where the "average book" starts
    right = mean_x + 0.5 + shift * n_pages + 1.6
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(1.35 * right, 3.0))
    for i in range(n_books):
        x0 = i * step
        for k in reversed(range(n_pages)):  # draw back pages first so page 0 is on top
            reduced = k == page
            ax.add_patch(Rectangle((x0 + k * shift, k * shift), width, height,
                                   facecolor=HIGHLIGHT if reduced else PLAIN, edgecolor=EDGE,
                                   linewidth=0.8, gid="reduced" if reduced else "other"))
        # H lines of W characters on the front page: the values one page holds
        for r in range(1, lines):
            ax.plot([x0, x0 + width], [r * height / lines] * 2, color=EDGE, lw=0.4, alpha=0.6)
        for c in range(1, chars):
            ax.plot([x0 + c * width / chars] * 2, [0, height], color=EDGE, lw=0.4, alpha=0.6)
        ax.text(x0 + width / 2, -0.15, f"book {i}\n(sample {i})", ha="center", va="top", fontsize=10)
    ax.text(-0.1, height / 2, f"page = channel\n{lines}x{chars} values\nper page",
            ha="right", va="center", fontsize=9)
    # the result: one number per page number
    ax.add_patch(FancyArrowPatch((mean_x - 0.75, height / 2), (mean_x - 0.1, height / 2),
                                 arrowstyle="-|>", mutation_scale=14, color=EDGE))
    cell = 0.5
    for k in reversed(range(n_pages)):
        ax.add_patch(Rectangle((mean_x + k * shift, height / 2 - cell / 2 + k * shift), cell, cell,
                               facecolor=HIGHLIGHT if k == page else PLAIN, edgecolor=EDGE,
                               linewidth=0.8, gid="mean"))
    ax.text(mean_x + cell / 2, height / 2 - cell / 2 - 0.15, "the average book:\none mean per\npage, shape (C,)",
            ha="center", va="top", fontsize=9)
    ax.set_xlim(-1.5, right)
    ax.set_ylim(-1.0, height + shift * n_pages + 0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"mean of channel {page} = average of page {page} over all {n_books} books "
                 f"(N x H x W = {n_books} x {lines} x {chars} values)", fontsize=11)
    return ax


def plot_layer_histograms(rows: Mapping[str, Sequence], bins: int = 30,
                          ranges: Mapping[str, tuple[float, float]] | None = None,
                          colors: Mapping[str, str] | None = None, col_titles: Sequence[str] | None = None):
    """A grid of histograms: one row per recorded quantity, one column per layer.

    Introduced in lesson 01 to compare the pre-activations and activations of each hidden layer
    of a network with and without BatchNorm.

    Args:
        rows: maps a row label (e.g. ``"tanh input, no BN"``) to a sequence of arrays or tensors,
            one per layer; every row must have the same number of layers.
        bins: bins per histogram. Default: 30.
        ranges: optional (low, high) per row label; by default each histogram uses its data range.
        colors: optional colour per row label. Default: matplotlib's cycle.
        col_titles: titles of the columns. Default: ``"layer 1"``, ``"layer 2"``, ...

    Returns:
        A ``Figure`` with ``len(rows) x n_layers`` axes; row labels are the y-labels of the first column.
    """
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("expected at least one row of per-layer data (got none)")
    lengths = {label: len(values) for label, values in rows.items()}
    n_layers = next(iter(lengths.values()))
    if n_layers < 1 or any(v != n_layers for v in lengths.values()):
        raise ValueError(f"expected every row to hold the same positive number of layers (got {lengths})")
    if col_titles is not None and len(col_titles) != n_layers:
        raise ValueError(f"expected {n_layers} column titles (got {len(col_titles)})")
    ranges = dict(ranges or {})
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width, height = 1.35 * n_layers + 1.0, 1.15 * len(rows) + 0.6
    fig, axes = plt.subplots(len(rows), n_layers, figsize=(width, height), squeeze=False)
    for r, (label, values) in enumerate(rows.items()):
        color = (colors or {}).get(label, cycle[r % len(cycle)])
        for j, v in enumerate(values):
            ax = axes[r, j]
            # one filled outline per histogram instead of one rectangle per bin: a 4 x 8 grid
            # draws several times faster, which matters for a notebook's run time
            ax.hist(_to_numpy(v), bins=bins, range=ranges.get(label), color=color, histtype="stepfilled")
            ax.set_yticks([])
            ax.tick_params(labelsize=7)
            if r == 0:
                ax.set_title(col_titles[j] if col_titles is not None else f"layer {j + 1}", fontsize=9)
        axes[r, 0].set_ylabel(label, fontsize=8)
    # fixed margins in inches rather than tight_layout, which costs about a second on a big grid
    fig.subplots_adjust(left=1.0 / width, right=1 - 0.1 / width, bottom=0.35 / height, top=1 - 0.35 / height,
                        wspace=0.12, hspace=0.45)
    return fig


def plot_curves(curves: Mapping[str, Sequence], ax=None, xlabel: str = "epoch", ylabel: str = "test loss",
                logy: bool = False, title: str | None = None, colors: Mapping[str, str] | None = None):
    """Loss curves: for each label one run, or several runs drawn thin with their mean drawn thick.

    Introduced in lesson 01 (test loss per epoch, with and without BN, over seeds).

    Args:
        curves: maps a label to one curve (a sequence of numbers) or to several runs (a sequence of
            equally long sequences, e.g. one per seed).
        ax: axes to draw on; a new figure is made when None. Default: None.
        xlabel, ylabel: axis labels. Defaults: ``"epoch"``, ``"test loss"``.
        logy: logarithmic y axis. Default: False.
        title: optional title.
        colors: optional colour per label. Default: matplotlib's cycle.

    Returns:
        The ``Axes``; each label's legend entry is its mean line (x starts at 1).
    """
    if not curves:
        raise ValueError("expected at least one curve (got none)")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5, 3.2))
    for label, runs in curves.items():
        arr = np.asarray([_to_numpy(r) for r in runs] if np.ndim(runs[0]) else [_to_numpy(runs)], dtype=float)
        x = np.arange(1, arr.shape[1] + 1)
        (line,) = ax.plot(x, arr.mean(axis=0), lw=2.2, color=(colors or {}).get(label),
                          label=label if len(arr) == 1 else f"{label} (mean of {len(arr)})")
        if len(arr) > 1:
            for run in arr:
                ax.plot(x, run, lw=0.7, alpha=0.45, color=line.get_color())
    return finish_axes(ax, xlabel, ylabel, title=title, logy=logy)


def plot_fit(x, y, predictions: Mapping[str, object], ax=None, title: str | None = None,
             colors: Mapping[str, str] | None = None):
    """A 1-D regression: the data as points and each model's prediction as a line.

    Introduced in lesson 01.

    Args:
        x, y: inputs and targets (arrays or tensors of the same length).
        predictions: maps a label to the predictions at ``x`` (same length as ``x``).
        ax: axes to draw on; a new figure is made when None. Default: None.
        title: optional title.
        colors: optional colour per prediction label. Default: matplotlib's cycle.

    Returns:
        The ``Axes`` (one scatter collection, one line per prediction, sorted by x).
    """
    xs, ys = _to_numpy(x), _to_numpy(y)
    if len(xs) != len(ys):
        raise ValueError(f"expected x and y of the same length (got {len(xs)} and {len(ys)})")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5, 3.2))
    order = np.argsort(xs)
    ax.scatter(xs, ys, s=8, alpha=0.3, color="grey", label="data")
    for label, pred in predictions.items():
        p = _to_numpy(pred)
        if len(p) != len(xs):
            raise ValueError(f"expected {len(xs)} predictions for {label!r} (got {len(p)})")
        ax.plot(xs[order], p[order], lw=2.2, label=label, color=(colors or {}).get(label))
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_distributions(samples: Mapping[str, object], ax=None, bins: int = 40, title: str | None = None):
    """Overlaid, density-normalized histograms of a few samples (e.g. a feature before and after BN).

    Introduced in lesson 01 to show that BatchNorm fixes the mean and variance, not the shape.

    Args:
        samples: maps a label to an array or tensor of values.
        ax: axes to draw on; a new figure is made when None. Default: None.
        bins: bins per histogram. Default: 40.
        title: optional title.

    Returns:
        The ``Axes``.
    """
    if not samples:
        raise ValueError("expected at least one sample (got none)")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5, 3.2))
    for label, values in samples.items():
        ax.hist(_to_numpy(values), bins=bins, density=True, alpha=0.55, label=label)
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def finish_axes(ax, xlabel: str, ylabel: str, title: str | None = None, logy: bool = False):
    """Labels, optional title and log y axis, and a small legend: how every curve figure of the course ends.
    Returns ``ax``."""
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax
