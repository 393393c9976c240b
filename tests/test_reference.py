"""coursekit.reference against PyTorch: the functional layers, BatchNorm module and backward.

Property-based: random 2D-5D shapes (batch sizes from 2), float32 and float64, train and eval,
momentum values including None, affine on and off, non-contiguous and channels_last inputs.
Folding is tested in tests/test_fold.py.
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from coursekit import reference as ref

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}
BN_CLASS = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def close(a, b, dtype):
    return torch.allclose(a, b, **TOL[dtype])


@st.composite
def inputs(draw, min_dim=2, max_dim=5):
    """A random (N, C, *) tensor in a random memory layout, with its dtype."""
    dim = draw(st.integers(min_dim, max_dim))
    n = draw(st.integers(2, 5))
    c = draw(st.integers(1, 4))
    spatial = [draw(st.integers(1, 4)) for _ in range(dim - 2)]
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    layout = draw(st.sampled_from(["contiguous", "strided", "channels_last"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shape = (n, c, *spatial)
    if layout == "strided":  # every other element of a larger tensor: not contiguous
        big = torch.randn(*shape[:-1], shape[-1] * 2, generator=g, dtype=dtype) * 3 + 1
        x = big[..., ::2]
        assert not x.is_contiguous() or shape[-1] == 1
    else:
        x = torch.randn(*shape, generator=g, dtype=dtype) * 3 + 1
        if layout == "channels_last" and dim == 4:
            x = x.to(memory_format=torch.channels_last)
        elif layout == "channels_last" and dim == 5:
            x = x.to(memory_format=torch.channels_last_3d)
    return x


def affine_params(c, dtype, affine, seed=0):
    if not affine:
        return None, None
    g = torch.Generator().manual_seed(seed)
    return torch.randn(c, generator=g, dtype=dtype), torch.randn(c, generator=g, dtype=dtype)


@given(x=inputs(), training=st.booleans(), momentum=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
       affine=st.booleans())
def test_batch_norm_matches_torch_including_running_stats(x, training, momentum, affine):
    """Output and the in-place running-statistics update equal F.batch_norm's."""
    c = x.shape[1]
    w, b = affine_params(c, x.dtype, affine)
    rm, rv = torch.rand(c, dtype=x.dtype), torch.rand(c, dtype=x.dtype) + 0.5
    rm2, rv2 = rm.clone(), rv.clone()
    ours = ref.batch_norm(x, rm, rv, w, b, training=training, momentum=momentum, eps=1e-5)
    theirs = F.batch_norm(x, rm2, rv2, w, b, training=training, momentum=momentum, eps=1e-5)
    assert close(ours, theirs, x.dtype)
    assert close(rm, rm2, x.dtype) and close(rv, rv2, x.dtype)


@given(x=inputs())
def test_batch_norm_training_without_running_stats(x):
    """With running_mean=running_var=None training mode uses batch statistics only."""
    assert close(ref.batch_norm(x, None, None, training=True),
                 F.batch_norm(x, None, None, training=True), x.dtype)


def test_batch_norm_does_not_mutate_input_and_keeps_grad():
    """The input tensor is untouched and gradients flow through the batch statistics."""
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    before = x.detach().clone()
    y = ref.batch_norm(x, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), training=True)
    assert torch.equal(x.detach(), before)
    (y * torch.arange(60.0, dtype=torch.float64).reshape(4, 3, 5)).sum().backward()
    x2 = before.clone().requires_grad_()
    (F.batch_norm(x2, None, None, training=True) * torch.arange(60.0, dtype=torch.float64).reshape(4, 3, 5)).sum().backward()
    assert torch.allclose(x.grad, x2.grad, rtol=1e-12, atol=1e-12)


@given(x=inputs(), momentum=st.sampled_from([None, 0.1, 0.9]), affine=st.booleans(),
       track=st.booleans())
def test_batchnorm_module_matches_nn_batchnorm_over_steps(x, momentum, affine, track):
    """Three training steps then eval: outputs, buffers and num_batches_tracked match nn.BatchNorm*d."""
    c = x.shape[1]
    ours = ref.BatchNorm(c, momentum=momentum, affine=affine, track_running_stats=track).to(x.dtype)
    theirs = BN_CLASS[x.dim()](c, momentum=momentum, affine=affine, track_running_stats=track).to(x.dtype)
    if affine:
        with torch.no_grad():
            w, b = affine_params(c, x.dtype, True, seed=1)
            for m in (ours, theirs):
                m.weight.copy_(w)
                m.bias.copy_(b)
    for step in range(3):
        xs = x * (step + 1) + step
        assert close(ours(xs), theirs(xs), x.dtype)
    for m in (ours, theirs):
        m.eval()
    assert close(ours(x), theirs(x), x.dtype)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert ours_sd.keys() == theirs_sd.keys()
    for k in ours_sd:
        assert torch.allclose(ours_sd[k].double(), theirs_sd[k].double(), rtol=1e-5, atol=1e-6), k


@pytest.mark.parametrize("cls", [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d])
def test_state_dict_round_trips_with_nn_batchnorm(cls):
    """A state_dict goes from BatchNorm into nn.BatchNorm1d/2d/3d and back, strictly."""
    shape = {nn.BatchNorm1d: (6, 3, 5), nn.BatchNorm2d: (6, 3, 4, 4), nn.BatchNorm3d: (6, 3, 2, 3, 3)}[cls]
    ours, theirs = ref.BatchNorm(3), cls(3)
    ours(torch.randn(shape))
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert int(theirs.num_batches_tracked) == 1
    theirs(torch.randn(shape))
    back = ref.BatchNorm(3)
    back.load_state_dict(theirs.state_dict(), strict=True)
    back.eval(), theirs.eval()
    x = torch.randn(shape)
    assert torch.allclose(back(x), theirs(x), atol=1e-6)


def test_batchnorm_eval_with_batch_of_one_and_no_tracking_uses_batch_stats():
    """Eval mode accepts one sample; track_running_stats=False normalizes with batch stats in eval too."""
    m = ref.BatchNorm(3).eval()
    assert m(torch.randn(1, 3)).shape == (1, 3)
    m2, t2 = ref.BatchNorm(3, track_running_stats=False).eval(), nn.BatchNorm1d(3, track_running_stats=False).eval()
    x = torch.randn(5, 3)
    assert m2.running_mean is None and torch.allclose(m2(x), t2(x), atol=1e-6)


@given(x=inputs(3, 5), use_running=st.booleans(), affine=st.booleans())
def test_instance_norm_matches_torch(x, use_running, affine):
    """Per-instance statistics, optional per-channel affine and running-stat update as F.instance_norm."""
    spatial = x[0, 0].numel()
    if spatial < 2:
        return  # one value per instance: both refuse; tested among the errors
    c = x.shape[1]
    w, b = affine_params(c, x.dtype, affine)
    rm, rv = (torch.rand(c, dtype=x.dtype), torch.rand(c, dtype=x.dtype) + 0.5) if use_running else (None, None)
    rm2, rv2 = (rm.clone(), rv.clone()) if use_running else (None, None)
    assert close(ref.instance_norm(x, rm, rv, w, b, momentum=0.3), F.instance_norm(x, rm2, rv2, w, b, momentum=0.3), x.dtype)
    if use_running:
        assert close(rm, rm2, x.dtype) and close(rv, rv2, x.dtype)
        assert close(ref.instance_norm(x, rm, rv, w, b, use_input_stats=False),
                     F.instance_norm(x, rm2, rv2, w, b, use_input_stats=False), x.dtype)


@given(x=inputs(2, 5), groups=st.integers(1, 3), affine=st.booleans())
def test_group_norm_matches_torch(x, groups, affine):
    """Statistics per sample over each group of channels, per-channel affine."""
    if x[0].numel() < 2:
        return  # one value per group: 0/sqrt(eps) of rounding noise, ill-conditioned in any implementation
    # C becomes a multiple of the group count; each group gets different values
    x = torch.cat([x * (i + 1) + i for i in range(groups)], dim=1)
    w, b = affine_params(x.shape[1], x.dtype, affine)
    assert close(ref.group_norm(x, groups, w, b), F.group_norm(x, groups, w, b), x.dtype)


@given(x=inputs(2, 5), k=st.integers(1, 3), affine=st.booleans())
def test_layer_and_rms_norm_match_torch(x, k, affine):
    """Normalization over the trailing k dims with per-element affine, for LayerNorm and RMSNorm."""
    k = min(k, x.dim() - 1)
    shape = tuple(x.shape[-k:])
    g = torch.Generator().manual_seed(3)
    w = torch.randn(shape, generator=g, dtype=x.dtype) if affine else None
    b = torch.randn(shape, generator=g, dtype=x.dtype) if affine else None
    assert close(ref.layer_norm(x, shape, w, b), F.layer_norm(x, shape, w, b), x.dtype)
    assert close(ref.rms_norm(x, shape, w), F.rms_norm(x, shape, w), x.dtype)
    assert close(ref.rms_norm(x, shape, w, eps=1e-3), F.rms_norm(x, shape, w, eps=1e-3), x.dtype)


def test_gn_special_cases_equal_ln_and_in_at_identity_affine():
    """GroupNorm(1, C) is LayerNorm over (C, H, W); GroupNorm(C, C) is InstanceNorm."""
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    assert torch.allclose(ref.group_norm(x, 1), ref.layer_norm(x, x.shape[1:]), atol=1e-12)
    assert torch.allclose(ref.group_norm(x, 4), ref.instance_norm(x), atol=1e-12)


# ---------------------------------------------------------------- backward
@given(x=inputs(), affine=st.booleans(), training=st.booleans())
def test_batch_norm_backward_matches_autograd(x, affine, training):
    """dx, dgamma, dbeta equal autograd's through F.batch_norm, in train and eval mode."""
    c = x.shape[1]
    x = x.detach().contiguous()
    w, b = affine_params(c, x.dtype, True)
    w = w if affine else None
    rm, rv = torch.randn(c, dtype=x.dtype), torch.rand(c, dtype=x.dtype) + 0.5
    xg = x.clone().requires_grad_()
    wg = (w if w is not None else torch.ones(c, dtype=x.dtype)).clone().requires_grad_()
    bg = torch.zeros(c, dtype=x.dtype, requires_grad=True)
    y = F.batch_norm(xg, rm.clone(), rv.clone(), wg, bg, training=training)
    dy = torch.randn_like(x)
    y.backward(dy)
    dx, dgamma, dbeta = ref.batch_norm_backward(dy, x, w, training=training, running_mean=rm, running_var=rv)
    tol = dict(rtol=1e-4, atol=1e-4) if x.dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    assert torch.allclose(dx, xg.grad, **tol)
    assert torch.allclose(dgamma, wg.grad, **tol) and torch.allclose(dbeta, bg.grad, **tol)


class _RefBN(torch.autograd.Function):
    """F.batch_norm's forward with coursekit's analytic backward, for gradcheck."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return ref.batch_norm(x, None, None, w, b, training=True)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        return ref.batch_norm_backward(dy, x, w)


@pytest.mark.parametrize("shape", [(2, 3), (4, 2, 5), (2, 3, 3, 2), (2, 2, 2, 2, 3)])
def test_batch_norm_backward_passes_gradcheck(shape):
    """gradcheck in float64 (numerical vs analytic Jacobian) for every input rank."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(shape[1], generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape[1], generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_RefBN.apply, (x, w, b))


def test_gradcheck_catches_a_backward_with_detached_statistics():
    """The check can fail: dropping the terms through mean and variance fails gradcheck."""

    class Detached(_RefBN):
        @staticmethod
        def backward(ctx, dy):
            x, w = ctx.saved_tensors
            var = x.var(dim=0, unbiased=False)
            x_hat = (x - x.mean(0)) / torch.sqrt(var + 1e-5)
            return dy * w / torch.sqrt(var + 1e-5), (dy * x_hat).sum(0), dy.sum(0)

    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert not torch.autograd.gradcheck(Detached.apply, (x, w, b), raise_exception=False)


# ---------------------------------------------------------------- errors
ERRORS = [
    (lambda: ref.batch_norm(torch.randn(5), None, None, training=True), ValueError, "expected 2D to 5D input (got 1D"),
    (lambda: ref.batch_norm(torch.randn(2, 3, 1, 1, 1, 1), None, None, training=True), ValueError, "2D to 5D"),
    (lambda: ref.batch_norm(torch.randn(4, 3), torch.zeros(4), torch.ones(4)), ValueError, "running_mean of shape (3,)"),
    (lambda: ref.batch_norm(torch.randn(4, 3), None, None, torch.ones(2), training=True), ValueError, "weight of shape (3,)"),
    (lambda: ref.batch_norm(torch.arange(12).reshape(4, 3), None, None, training=True), TypeError, "floating-point"),
    (lambda: ref.batch_norm(torch.randn(4, 3), None, None, training=True, eps=0.0), ValueError, "eps > 0"),
    (lambda: ref.batch_norm(torch.randn(4, 3), None, None, training=True, eps=-1e-5), ValueError, "eps > 0"),
    (lambda: ref.batch_norm(torch.randn(1, 3), None, None, training=True), ValueError, "more than 1 value per channel"),
    (lambda: ref.batch_norm(torch.randn(1, 3, 1, 1), None, None, training=True), ValueError,
     "more than 1 value per channel"),
    (lambda: ref.batch_norm(torch.randn(4, 3), None, None, training=False), ValueError, "eval mode"),
    (lambda: ref.batch_norm(torch.randn(4, 3), torch.zeros(3), torch.ones(3), training=True, momentum=None), ValueError,
     "num_batches_tracked"),
    (lambda: ref.batch_norm(torch.randn(4, 3), None, None, training=True, momentum=1.5), ValueError, "momentum in [0, 1]"),
    (lambda: ref.batch_norm([[1.0, 2.0]], None, None), TypeError, "torch.Tensor"),
    (lambda: ref.BatchNorm(3)(torch.randn(4, 5)), ValueError, "expected input with 3 channels (got 5"),
    (lambda: ref.BatchNorm(3)(torch.randn(1, 3)), ValueError, "more than 1 value per channel"),
    (lambda: ref.BatchNorm(0), ValueError, "num_features"),
    (lambda: ref.group_norm(torch.randn(2, 6, 3), 4), ValueError, "dividing the 6 channels (got 4)"),
    (lambda: ref.layer_norm(torch.randn(2, 6, 3), (6, 4)), ValueError, "normalized_shape=(6, 4)"),
    (lambda: ref.instance_norm(torch.randn(2, 6)), ValueError, "3D to 5D"),
    (lambda: ref.instance_norm(torch.randn(2, 6, 1)), ValueError, "more than 1 spatial element"),
    (lambda: ref.batch_norm_backward(torch.randn(3, 3), torch.randn(4, 3)), ValueError, "dy of the input's shape (4, 3)"),
    (lambda: ref.batch_norm_backward(torch.randn(4, 3), torch.randn(4, 3), training=False), ValueError, "running_mean"),
]


@pytest.mark.parametrize("call,exc,message", ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_bad_input_raises_clear_error(call, exc, message):
    """Each misuse raises ValueError/TypeError naming what was expected and what was got."""
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value)


def test_eval_mode_accepts_eps_zero_and_one_sample():
    """Eval mode has no batch statistics, so a single sample and eps=0 are both fine."""
    y = ref.batch_norm(torch.randn(1, 3), torch.zeros(3), torch.ones(3), training=False, eps=0.0)
    assert y.shape == (1, 3)
