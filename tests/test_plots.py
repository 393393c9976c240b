"""Tests of coursekit.lab.plots: figure contents (titles, highlighted patches, lines), not pixels."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from coursekit.lab import plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _patches(ax, gid):
    return [p for p in ax.patches if p.get_gid() == gid]


def _dependence_mask(kind, shape, num_groups):
    """Elements of x that the normalized output y[0, 0, 0] depends on, found with autograd."""
    n, c, h, w = shape
    x = torch.randn(n, c, h * w, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)
    if kind == "batch":
        y = F.batch_norm(x, None, None, training=True)
    elif kind == "layer":
        y = F.layer_norm(x, (c, h * w))
    elif kind == "instance":
        y = F.instance_norm(x)
    else:
        y = F.group_norm(x, num_groups)
    (grad,) = torch.autograd.grad(y[0, 0, 0], x)
    return (grad != 0).numpy()


@pytest.mark.parametrize("kind", list(plots.NORM_KINDS))
@pytest.mark.parametrize("shape,num_groups", [((4, 6, 3, 2), 2), ((3, 4, 2, 2), 4), ((2, 6, 1, 3), 3)])
def test_reduced_mask_matches_what_pytorch_reduces(kind, shape, num_groups):
    assert np.array_equal(plots.reduced_mask(kind, shape, num_groups), _dependence_mask(kind, shape, num_groups))


def test_dependence_check_can_fail():
    # The check above must tell the kinds apart: a wrong mask (another kind's) disagrees with autograd.
    shape = (4, 6, 3, 2)
    for right, wrong in [("batch", "layer"), ("layer", "group"), ("instance", "group"), ("group", "instance")]:
        assert not np.array_equal(plots.reduced_mask(wrong, shape), _dependence_mask(right, shape, 2))


def test_reduced_mask_accepts_flat_spatial_shape():
    assert plots.reduced_mask("batch", (2, 3, 4)).shape == (2, 3, 4)
    assert plots.reduced_mask("batch", (2, 3, 4)).sum() == 8


@pytest.mark.parametrize("kind,expected", [("batch", 34), ("layer", 12), ("instance", 7), ("group", 9)])
def test_plot_norm_axes_highlights_the_visible_reduced_cells(kind, expected):
    # shape (4, 6, 3, 2): front face N x HW = 24 cells, top N x C = 24, right C x HW = 36.
    ax = plots.plot_norm_axes(kind)
    assert ax.get_title() == plots.NORM_KINDS[kind]
    assert len(_patches(ax, "reduced")) == expected
    assert len(_patches(ax, "reduced")) + len(_patches(ax, "other")) == 24 + 24 + 36
    assert {t.get_text() for t in ax.texts} == {"N", "C", "H, W"}


def test_plot_norm_axes_counts_follow_the_mask():
    shape, groups = (3, 8, 2, 2), 4
    mask = plots.reduced_mask("group", shape, groups)
    visible = mask[:, 0, :].sum() + mask[:, :, 0].sum() + mask[-1, :, :].sum()
    ax = plots.plot_norm_axes("group", shape=shape, num_groups=groups)
    assert len(_patches(ax, "reduced")) == visible == 4 + 2  # sample 0: front column of H*W = 4 cells, top 2 channels


def test_plot_norm_axes_draws_on_given_axes():
    fig, ax = plt.subplots()
    assert plots.plot_norm_axes("layer", ax=ax) is ax
    assert len(fig.axes) == 1


@pytest.mark.parametrize("bad", ["batchnorm", "BN", None, "rms"])
def test_plot_norm_axes_rejects_unknown_kind(bad):
    with pytest.raises(ValueError, match="expected kind"):
        plots.plot_norm_axes(bad)


@pytest.mark.parametrize("shape,groups,err", [((4, 6, 3, 2), 4, ValueError), ((4, 6), 2, ValueError),
                                              ((4, 0, 3, 2), 2, ValueError), (7, 2, TypeError)])
def test_bad_shape_or_groups_raise(shape, groups, err):
    with pytest.raises(err, match="expected"):
        plots.plot_norm_axes("group", shape=shape, num_groups=groups)


def test_plot_norm_family_has_four_titled_panels():
    fig = plots.plot_norm_family()
    assert [ax.get_title() for ax in fig.axes] == ["Batch Norm", "Layer Norm", "Instance Norm", "Group Norm"]
    assert [len(_patches(ax, "reduced")) for ax in fig.axes] == [34, 12, 7, 9]


def test_plot_book_stack():
    ax = plots.plot_book_stack(n_books=5, n_pages=3, page=2)
    assert len(_patches(ax, "reduced")) == 5
    assert len(_patches(ax, "other")) == 10
    assert "page 2" in ax.get_title() and "5 books" in ax.get_title()
    means = _patches(ax, "mean")
    assert len(means) == 3  # the average book: one mean per page
    assert sum(p.get_facecolor()[:3] == matplotlib.colors.to_rgb(plots.HIGHLIGHT) for p in means) == 1
    with pytest.raises(ValueError, match="expected page"):
        plots.plot_book_stack(n_pages=3, page=3)
    with pytest.raises(ValueError, match="n_books"):
        plots.plot_book_stack(n_books=0)


def test_plot_layer_histograms_grid():
    layers = [torch.randn(50) for _ in range(3)]
    fig = plots.plot_layer_histograms({"a": layers, "b": [np.ones(10)] * 3}, ranges={"a": (-1, 1)})
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["layer 1", "layer 2", "layer 3"]
    assert fig.axes[0].get_ylabel() == "a" and fig.axes[3].get_ylabel() == "b"
    assert fig.axes[0].get_xlim()[0] <= -1 and fig.axes[0].get_xlim()[1] >= 1
    # each histogram is the histogram of its own layer (another layer's data would not match)
    counts, _ = np.histogram(layers[0].numpy(), bins=30, range=(-1, 1))
    outline = fig.axes[0].patches[0].get_xy()
    assert outline[:, 1].max() == counts.max()


def test_plot_layer_histograms_rejects_ragged_rows():
    with pytest.raises(ValueError, match="same positive number of layers"):
        plots.plot_layer_histograms({"a": [np.ones(3)] * 2, "b": [np.ones(3)] * 3})
    with pytest.raises(ValueError, match="at least one row"):
        plots.plot_layer_histograms({})
    with pytest.raises(ValueError, match="column titles"):
        plots.plot_layer_histograms({"a": [np.ones(3)] * 2}, col_titles=["x"])


def test_plot_curves_single_and_multi_run():
    ax = plots.plot_curves({"no BN": [[3.0, 2.0, 1.0], [5.0, 4.0, 3.0]], "BN": [1.0, 0.5, 0.25]}, logy=True)
    assert len(ax.lines) == 1 + 2 + 1
    assert np.allclose(ax.lines[0].get_ydata(), [4.0, 3.0, 2.0])  # the mean over runs
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["no BN (mean of 2)", "BN"]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "test loss"
    colored = plots.plot_curves({"a": [1.0, 2.0], "b": [[1.0, 2.0], [2.0, 3.0]]}, colors={"b": "red"})
    assert all(line.get_color() == "red" for line in colored.lines[1:])  # mean and runs of "b"
    with pytest.raises(ValueError):
        plots.plot_curves({})


def test_plot_fit():
    x = torch.linspace(-1, 1, 20)
    ax = plots.plot_fit(x, x**2, {"model": x**2 + 0.1}, title="fit", colors={"model": "green"})
    assert ax.lines[0].get_color() == "green"
    assert len(ax.collections) == 1 and len(ax.lines) == 1 and ax.get_title() == "fit"
    assert np.all(np.diff(ax.lines[0].get_xdata()) >= 0)
    with pytest.raises(ValueError, match="same length"):
        plots.plot_fit(x, x[:5], {})
    with pytest.raises(ValueError, match="predictions"):
        plots.plot_fit(x, x, {"m": x[:3]})


def test_plot_distributions():
    ax = plots.plot_distributions({"before": np.random.default_rng(0).exponential(size=500),
                                   "after": np.zeros(10)}, bins=10)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before", "after"]
    assert len(ax.patches) >= 11
    with pytest.raises(ValueError):
        plots.plot_distributions({})
