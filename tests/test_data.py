"""Tests of coursekit.lab.data: shapes, determinism, the generating law, stratification, errors."""
import numpy as np
import pytest
import torch

from coursekit.lab.data import Split, digits_data, quadratic_data


def test_quadratic_shapes_and_split_sizes():
    d = quadratic_data()
    assert isinstance(d, Split)
    assert d.x_train.shape == d.y_train.shape == (1600, 1)
    assert d.x_test.shape == d.y_test.shape == (400, 1)
    assert d.x_train.dtype == torch.float32
    assert quadratic_data(n=10, test_fraction=0.3).x_test.shape == (3, 1)


def test_quadratic_range_and_law():
    d = quadratic_data(n=500, low=-7, high=10, noise=0.0, dtype=torch.float64)
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    assert float(x.min()) >= -7 and float(x.max()) <= 10
    assert torch.allclose(y, x**2 - 5, atol=1e-12)
    # a wrong law (no -5 offset) must fail the same check
    assert not torch.allclose(y, x**2, atol=1e-12)


def test_quadratic_noise_level():
    d = quadratic_data(n=20000, noise=2.0, dtype=torch.float64)
    resid = torch.cat([d.y_train - (d.x_train**2 - 5), d.y_test - (d.x_test**2 - 5)])
    assert abs(float(resid.std()) - 2.0) < 0.05
    assert abs(float(resid.mean())) < 0.05


def test_quadratic_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = quadratic_data(seed=3), quadratic_data(seed=3)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, quadratic_data(seed=4).x_train)


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=1), "n >= 2"), (dict(low=3, high=3), "low < high"),
    (dict(test_fraction=0.0), "test_fraction"), (dict(test_fraction=1.0), "test_fraction"),
])
def test_quadratic_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        quadratic_data(**kwargs)


@pytest.fixture(scope="module")
def digits():
    return digits_data()


def _test_share_per_class(split):
    counts_test = np.bincount(split.y_test.numpy(), minlength=10)
    counts_all = counts_test + np.bincount(split.y_train.numpy(), minlength=10)
    return counts_test / counts_all


def test_digits_shapes_and_scaling(digits):
    assert digits.x_train.shape[1:] == (1, 8, 8) and digits.x_test.shape[1:] == (1, 8, 8)
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert len(digits.x_train) == len(digits.y_train) and len(digits.x_test) == len(digits.y_test)
    assert digits.y_train.dtype == torch.int64
    assert float(digits.x_train.min()) == 0.0 and float(digits.x_train.max()) == 1.0


def test_digits_are_scikit_learns_load_digits(digits):
    """The digits are read from scikit-learn's bundled file without importing it: the same images and labels."""
    from sklearn.datasets import load_digits

    ref = load_digits()
    x = torch.cat([digits.x_train, digits.x_test]).flatten(1) * 16
    y = torch.cat([digits.y_train, digits.y_test])
    expected = {tuple(row) + (int(t),) for row, t in zip(ref.data.tolist(), ref.target.tolist())}
    assert {tuple(row) + (int(t),) for row, t in zip(x.tolist(), y.tolist())} == expected
    assert len(expected) > 1700   # (almost) no duplicate images: the set comparison sees a wrong label or pixel


def test_digits_split_is_stratified(digits):
    share = _test_share_per_class(digits)
    assert np.all(np.abs(share - 0.25) < 0.01)
    # the same check rejects a split that puts one class only in the test set
    bad = Split(digits.x_train, torch.where(digits.y_train == 0, 1, digits.y_train), digits.x_test, digits.y_test)
    assert not np.all(np.abs(_test_share_per_class(bad) - 0.25) < 0.01)


def test_digits_is_seeded(digits):
    again = digits_data()
    assert torch.equal(digits.x_test, again.x_test) and torch.equal(digits.y_train, again.y_train)
    other = digits_data(seed=1)
    assert not torch.equal(digits.y_train, other.y_train)


def test_digits_errors():
    with pytest.raises(ValueError, match="test_fraction"):
        digits_data(test_fraction=1.5)


def test_standardize_uses_training_statistics_only():
    """Train split gets mean 0 / std 1 per column; the test split is mapped with the *train* stats."""
    from coursekit.lab.data import standardize

    d = quadratic_data(n=500, seed=4, dtype=torch.float64)
    s = standardize(d)
    for t in (s.x_train, s.y_train):
        assert torch.allclose(t.mean(0), torch.zeros(1, dtype=t.dtype), atol=1e-12)
        assert torch.allclose(t.std(0, unbiased=False), torch.ones(1, dtype=t.dtype), atol=1e-12)
    mx, sx = d.x_train.mean(0), d.x_train.std(0, unbiased=False)
    assert torch.allclose(s.x_test, (d.x_test - mx) / sx)
    # standardizing the test split with its own statistics (a leak) gives different values
    assert not torch.allclose(s.x_test, (d.x_test - d.x_test.mean(0)) / d.x_test.std(0, unbiased=False))
    assert torch.equal(d.x_train, quadratic_data(n=500, seed=4, dtype=torch.float64).x_train)  # input untouched


def test_standardize_errors():
    from coursekit.lab.data import standardize

    with pytest.raises(ValueError, match="expected a Split"):
        standardize((torch.zeros(3, 1),) * 4)
    bad = Split(torch.zeros(3), torch.zeros(3), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="expected 2D"):
        standardize(bad)
