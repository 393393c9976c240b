r"""Folding an eval-mode BatchNorm into the convolution or linear layer before it (lesson 07).

In eval mode BatchNorm is a fixed per-channel affine map of its input, so it can be absorbed into
the weights of a preceding convolution or linear layer. For output channel :math:`c`, with running
statistics :math:`\mu_c, \sigma_c^2`, affine parameters :math:`\gamma_c, \beta_c` and ``eps``
:math:`\epsilon`:

.. math::
    s_c = \frac{\gamma_c}{\sqrt{\sigma_c^2 + \epsilon}}, \qquad
    W'_c = s_c \, W_c, \qquad
    b'_c = (b_c - \mu_c) \, s_c + \beta_c

so that ``bn(conv(x)) == conv'(x)`` with weight :math:`W'` and bias :math:`b'`. A missing conv bias
counts as :math:`b = 0`; ``affine=False`` counts as :math:`\gamma = 1, \beta = 0`.

Two layers of API, as in ``torch.nn.utils.fusion``:

* the pure maths on tensors: ``fold_conv_bn_weights`` and ``fold_linear_bn_weights``;
* module wrappers that return a **new** layer and never touch their inputs: ``fold_conv_bn``,
  ``fold_linear_bn``, and ``fold_model`` for a whole network.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from coursekit.reference.modules import BatchNorm as _CourseBatchNorm

__all__ = [
    "fold_conv_bn_weights",
    "fold_linear_bn_weights",
    "fold_conv_bn",
    "fold_linear_bn",
    "fold_model",
]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# BatchNorm1d follows a Conv1d or a Linear, BatchNorm2d a Conv2d, BatchNorm3d a Conv3d.
_BN_BY_DIM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
# Layers that accept any number of spatial dims, so they may follow any conv.
_BN_ANY_DIM = (nn.SyncBatchNorm, _CourseBatchNorm)


def _check_tensor(t, name: str, shape: tuple[int, ...] | None = None, optional: bool = False) -> None:
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor):
        want = "a torch.Tensor or None" if optional else "a torch.Tensor"
        raise TypeError(f"expected {name} to be {want} (got {type(t).__name__})")
    if not t.is_floating_point():
        raise TypeError(f"expected a floating-point {name} (got {t.dtype})")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"expected {name} of shape {tuple(shape)} (got {tuple(t.shape)})")


def _scale_shift(bn_rm, bn_rv, bn_eps, bn_w, bn_b, num: int, dtype: torch.dtype):
    """Per-channel ``s = gamma / sqrt(var + eps)`` and the BN parameters, validated, in ``dtype``."""
    for t, name, optional in ((bn_rm, "bn_rm", False), (bn_rv, "bn_rv", False),
                              (bn_w, "bn_w", True), (bn_b, "bn_b", True)):
        _check_tensor(t, name, (num,), optional)
    if not isinstance(bn_eps, (int, float)) or isinstance(bn_eps, bool) or bn_eps < 0:
        raise ValueError(f"expected bn_eps >= 0 (got {bn_eps!r})")
    rv = bn_rv.to(dtype)
    if bool((rv + bn_eps <= 0).any()):
        raise ValueError(
            f"expected bn_rv + bn_eps > 0 in every channel (got a minimum of {float((rv + bn_eps).min())})"
        )
    rm = bn_rm.to(dtype)
    gamma = torch.ones_like(rm) if bn_w is None else bn_w.to(dtype)
    beta = torch.zeros_like(rm) if bn_b is None else bn_b.to(dtype)
    return gamma * torch.rsqrt(rv + bn_eps), rm, beta


def _compute_dtype(*ts) -> torch.dtype:
    """The widest floating dtype among the tensors: folding a float32 conv with float64 statistics
    should not first round the statistics down."""
    dtype = None
    for t in ts:
        if t is not None:
            dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    return dtype


@torch.no_grad()
def fold_conv_bn_weights(conv_w: torch.Tensor, conv_b: torch.Tensor | None, bn_rm: torch.Tensor,
                         bn_rv: torch.Tensor, bn_eps: float, bn_w: torch.Tensor | None,
                         bn_b: torch.Tensor | None, transpose: bool = False,
                         groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Fold eval-mode BatchNorm parameters into a convolution's weight and bias.

    The pure maths behind ``fold_conv_bn`` (like ``torch.nn.utils.fusion.fuse_conv_bn_weights``).
    Introduced in lesson 07. With :math:`s_c = \gamma_c / \sqrt{\sigma_c^2 + \epsilon}` for each
    output channel :math:`c`:

    .. math::
        W'_c = s_c \, W_c, \qquad b'_c = (b_c - \mu_c) \, s_c + \beta_c

    The computation runs in the widest dtype of the inputs and the results are cast to the dtype
    of ``conv_w`` (weight) and of ``conv_b`` (bias; ``conv_w``'s when ``conv_b`` is None). Nothing
    is modified in place; the results are new tensors without autograd history.

    Args:
        conv_w: convolution weight.
        conv_b: convolution bias, or None (treated as zeros).
        bn_rm: BatchNorm ``running_mean`` :math:`\mu`.
        bn_rv: BatchNorm ``running_var`` :math:`\sigma^2`.
        bn_eps: BatchNorm ``eps`` :math:`\epsilon`, added to the variance inside the square root.
        bn_w: BatchNorm ``weight`` :math:`\gamma`, or None for ``affine=False`` (treated as ones).
        bn_b: BatchNorm ``bias`` :math:`\beta`, or None for ``affine=False`` (treated as zeros).
        transpose: the weight belongs to a ``ConvTranspose*d``, whose output channels are its
            second dimension. Default: False.
        groups: the transposed convolution's ``groups`` (its weight holds ``C_out / groups``
            channels per group); ignored when ``transpose=False``. Default: 1.

    Shape:
        - conv_w: :math:`(C_{out}, C_{in} / \text{groups}, *k)`, or
          :math:`(C_{in}, C_{out} / \text{groups}, *k)` with ``transpose=True``.
        - conv_b, bn_rm, bn_rv, bn_w, bn_b: :math:`(C_{out})`.
        - Output: ``(weight, bias)`` with the shapes of ``conv_w`` and :math:`(C_{out})`.

    Example::

        >>> conv, bn = nn.Conv2d(3, 8, 3, bias=False).eval(), nn.BatchNorm2d(8).eval()
        >>> w, b = fold_conv_bn_weights(conv.weight, None, bn.running_mean, bn.running_var,
        ...                             bn.eps, bn.weight, bn.bias)
        >>> w.shape, b.shape
        (torch.Size([8, 3, 3, 3]), torch.Size([8]))
    """
    _check_tensor(conv_w, "conv_w")
    if conv_w.dim() < 3:
        raise ValueError(
            f"expected a convolution weight with at least 3 dims (C_out, C_in/groups, *kernel) "
            f"(got shape {tuple(conv_w.shape)})"
        )
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"expected groups to be a positive int (got {groups!r})")
    if transpose:
        if conv_w.shape[0] % groups:
            raise ValueError(
                f"expected groups to divide the transposed weight's first dim "
                f"(got groups={groups}, shape {tuple(conv_w.shape)})"
            )
        out_channels = conv_w.shape[1] * groups
    else:
        out_channels = conv_w.shape[0]
    _check_tensor(conv_b, "conv_b", (out_channels,), optional=True)
    dtype = _compute_dtype(conv_w, conv_b, bn_rm, bn_rv, bn_w, bn_b)
    scale, rm, beta = _scale_shift(bn_rm, bn_rv, bn_eps, bn_w, bn_b, out_channels, dtype)
    w = conv_w.to(dtype)
    k = (1,) * (conv_w.dim() - 2)
    if transpose:
        # (C_in, C_out/g, *k): split C_in into groups so each group scales its own output channels.
        c_in, per_group = conv_w.shape[0], conv_w.shape[1]
        w = w.reshape(groups, c_in // groups, per_group, *conv_w.shape[2:])
        w = (w * scale.reshape(groups, 1, per_group, *k)).reshape(conv_w.shape)
    else:
        w = w * scale.reshape(-1, 1, *k)
    b = torch.zeros_like(rm) if conv_b is None else conv_b.to(dtype)
    b = (b - rm) * scale + beta
    bias_dtype = conv_w.dtype if conv_b is None else conv_b.dtype
    return w.to(conv_w.dtype).clone(), b.to(bias_dtype)


@torch.no_grad()
def fold_linear_bn_weights(linear_w: torch.Tensor, linear_b: torch.Tensor | None, bn_rm: torch.Tensor,
                           bn_rv: torch.Tensor, bn_eps: float, bn_w: torch.Tensor | None,
                           bn_b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Fold eval-mode BatchNorm1d parameters into a linear layer's weight and bias.

    The pure maths behind ``fold_linear_bn`` (like ``torch.nn.utils.fusion.fuse_linear_bn_weights``).
    Introduced in lesson 07. Row :math:`c` of the weight is the output feature :math:`c`:

    .. math::
        W'_{c,:} = s_c \, W_{c,:}, \qquad b'_c = (b_c - \mu_c) \, s_c + \beta_c, \qquad
        s_c = \frac{\gamma_c}{\sqrt{\sigma_c^2 + \epsilon}}

    Dtypes and missing tensors are handled as in ``fold_conv_bn_weights``.

    Args:
        linear_w: linear weight.
        linear_b: linear bias, or None (treated as zeros).
        bn_rm, bn_rv: BatchNorm running mean and running variance.
        bn_eps: BatchNorm ``eps``.
        bn_w, bn_b: BatchNorm weight and bias, or None for ``affine=False``.

    Shape:
        - linear_w: :math:`(\text{out}, \text{in})`; linear_b and the BN tensors: :math:`(\text{out})`.
        - Output: ``(weight, bias)`` of shapes :math:`(\text{out}, \text{in})` and :math:`(\text{out})`.

    Example::

        >>> lin, bn = nn.Linear(4, 3), nn.BatchNorm1d(3).eval()
        >>> w, b = fold_linear_bn_weights(lin.weight, lin.bias, bn.running_mean, bn.running_var,
        ...                               bn.eps, bn.weight, bn.bias)
        >>> torch.allclose(w, lin.weight / (1 + 1e-5) ** 0.5)
        True
    """
    _check_tensor(linear_w, "linear_w")
    if linear_w.dim() != 2:
        raise ValueError(f"expected a 2D linear weight (out, in) (got shape {tuple(linear_w.shape)})")
    out = linear_w.shape[0]
    _check_tensor(linear_b, "linear_b", (out,), optional=True)
    dtype = _compute_dtype(linear_w, linear_b, bn_rm, bn_rv, bn_w, bn_b)
    scale, rm, beta = _scale_shift(bn_rm, bn_rv, bn_eps, bn_w, bn_b, out, dtype)
    w = linear_w.to(dtype) * scale.unsqueeze(1)
    b = torch.zeros_like(rm) if linear_b is None else linear_b.to(dtype)
    b = (b - rm) * scale + beta
    bias_dtype = linear_w.dtype if linear_b is None else linear_b.dtype
    return w.to(linear_w.dtype).clone(), b.to(bias_dtype)


def _check_bn(bn, after: str, expected_bn: type | None) -> None:
    ok = isinstance(bn, _BN_ANY_DIM) or (expected_bn is not None and isinstance(bn, expected_bn))
    if not ok:
        want = expected_bn.__name__ if expected_bn is not None else "a BatchNorm"
        raise TypeError(f"expected nn.{want} after {after} (got {type(bn).__name__})")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "expected bn with running statistics (got track_running_stats=False): such a layer "
            "normalizes with the statistics of each batch, even in eval mode, so it is not a fixed "
            "affine map and cannot be folded"
        )


def _check_eval(layer: nn.Module, bn: nn.Module, layer_name: str) -> None:
    for name, m in ((layer_name, layer), ("bn", bn)):
        if m.training:
            raise ValueError(
                f"expected {layer_name} and bn in eval mode (got {name}.training=True): in training "
                "mode BatchNorm uses batch statistics, which no fixed weight can reproduce; call "
                ".eval() on both first"
            )


def fold_conv_bn(conv: nn.Module, bn: nn.Module) -> nn.Module:
    r"""A new convolution equal to ``bn(conv(x))`` in eval mode: BatchNorm folded into the weights.

    Introduced in lesson 07. Returns a deep copy of ``conv`` (so stride, padding, dilation, groups,
    padding_mode, dtype, device and ``requires_grad`` are kept) whose weight and bias are replaced by
    ``fold_conv_bn_weights``; the copy always has a bias. ``conv`` and ``bn`` are not modified.
    ``ConvTranspose1d/2d/3d`` are folded too (their output channels are the weight's second dim).

    .. math::
        W'_c = \frac{\gamma_c}{\sqrt{\sigma_c^2 + \epsilon}} W_c, \qquad
        b'_c = (b_c - \mu_c) \frac{\gamma_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c

    Args:
        conv: an ``nn.Conv1d/2d/3d`` (or ``nn.ConvTranspose1d/2d/3d``) in eval mode.
        bn: the matching ``nn.BatchNorm1d/2d/3d`` in eval mode with running statistics
            (``nn.SyncBatchNorm`` and ``coursekit.reference.BatchNorm`` are accepted too) and
            ``num_features == conv.out_channels``.

    Raises:
        TypeError: ``conv`` is not a convolution, or ``bn`` not a BatchNorm of the same dimension.
        ValueError: either module is in training mode, the channel counts differ, or ``bn`` has
            no running statistics (``track_running_stats=False``).

    Shape:
        - Input and output: those of ``conv``.

    Example::

        >>> conv = nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect", bias=False).eval()
        >>> bn = nn.BatchNorm2d(8).eval()
        >>> folded = fold_conv_bn(conv, bn)
        >>> x = torch.randn(2, 3, 5, 5)
        >>> torch.allclose(folded(x), bn(conv(x)), atol=1e-6)
        True
    """
    if isinstance(conv, _CONVS):
        transpose = False
    elif isinstance(conv, _CONV_TRANSPOSES):
        transpose = True
    else:
        raise TypeError(
            f"expected nn.Conv1d, nn.Conv2d or nn.Conv3d (or a ConvTranspose) (got {type(conv).__name__})"
        )
    dim = len(conv.kernel_size)
    _check_bn(bn, type(conv).__name__, _BN_BY_DIM[dim])
    if bn.num_features != conv.out_channels:
        raise ValueError(
            f"expected bn.num_features == conv.out_channels (expected {conv.out_channels}, "
            f"got {bn.num_features})"
        )
    _check_eval(conv, bn, "conv")
    folded = copy.deepcopy(conv)
    w, b = fold_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                bn.weight, bn.bias, transpose=transpose, groups=conv.groups)
    folded.weight = nn.Parameter(w, requires_grad=conv.weight.requires_grad)
    folded.bias = nn.Parameter(b, requires_grad=conv.weight.requires_grad if conv.bias is None
                               else conv.bias.requires_grad)
    return folded


def fold_linear_bn(linear: nn.Module, bn: nn.Module) -> nn.Module:
    r"""A new ``nn.Linear`` equal to ``bn(linear(x))`` in eval mode, for 2D activations (N, features).

    Introduced in lesson 07. Same contract as ``fold_conv_bn``: a deep copy of ``linear`` with the
    folded weight and a bias (``fold_linear_bn_weights``); the inputs are not modified.

    BatchNorm1d normalizes dimension 1, so the result equals ``bn(linear(x))`` when ``linear``'s
    output is (N, out_features), the usual MLP case (PyTorch's fuser assumes the same). On a 3D
    input (N, L, in) the linear's features are the *last* dim and the two differ.

    Args:
        linear: an ``nn.Linear`` in eval mode.
        bn: an ``nn.BatchNorm1d`` in eval mode with running statistics and
            ``num_features == linear.out_features``.

    Raises:
        TypeError: wrong module types. ValueError: training mode, a feature-count mismatch, or no
        running statistics.

    Shape:
        - Input: :math:`(N, \text{in})`. Output: :math:`(N, \text{out})`.

    Example::

        >>> lin, bn = nn.Linear(4, 3).eval(), nn.BatchNorm1d(3).eval()
        >>> x = torch.randn(5, 4)
        >>> torch.allclose(fold_linear_bn(lin, bn)(x), bn(lin(x)), atol=1e-6)
        True
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"expected nn.Linear (got {type(linear).__name__})")
    _check_bn(bn, "nn.Linear", nn.BatchNorm1d)
    if bn.num_features != linear.out_features:
        raise ValueError(
            f"expected bn.num_features == linear.out_features (expected {linear.out_features}, "
            f"got {bn.num_features})"
        )
    _check_eval(linear, bn, "linear")
    folded = copy.deepcopy(linear)
    w, b = fold_linear_bn_weights(linear.weight, linear.bias, bn.running_mean, bn.running_var,
                                  bn.eps, bn.weight, bn.bias)
    folded.weight = nn.Parameter(w, requires_grad=linear.weight.requires_grad)
    folded.bias = nn.Parameter(b, requires_grad=linear.weight.requires_grad if linear.bias is None
                               else linear.bias.requires_grad)
    return folded


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    """Would ``fold_conv_bn``/``fold_linear_bn`` accept this pair (types, channels, running stats)?

    Exact types only: a subclass may override ``forward`` (weight standardization, a custom
    normalization), and then new weights alone would not reproduce it.
    """
    if type(layer) in _CONVS + _CONV_TRANSPOSES:
        right_type = type(bn) in _BN_ANY_DIM + (_BN_BY_DIM[len(layer.kernel_size)],)
        channels = layer.out_channels
    elif type(layer) is nn.Linear:
        right_type = type(bn) in _BN_ANY_DIM + (nn.BatchNorm1d,)
        channels = layer.out_features
    else:
        return False
    return (right_type and bn.num_features == channels
            and bn.running_mean is not None and bn.running_var is not None)


def _fold_pair(layer: nn.Module, bn: nn.Module) -> nn.Module:
    return fold_linear_bn(layer, bn) if isinstance(layer, nn.Linear) else fold_conv_bn(layer, bn)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def _fx_pairs(model: nn.Module) -> list[tuple[str, str]] | None:
    """(layer, bn) qualified names of the foldable pairs in the traced graph, or None if untraceable."""
    try:
        import torch.fx

        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # any tracing failure (control flow on values, unsupported ops): use the walk
        return None
    modules = dict(model.named_modules(remove_duplicate=False))
    calls: dict[int, int] = {}
    attrs = set()
    for node in graph.nodes:
        if node.op == "call_module":
            key = id(modules[node.target])
            calls[key] = calls.get(key, 0) + 1
        elif node.op == "get_attr":
            attrs.add(node.target)

    def used_elsewhere(name: str) -> bool:
        # The layer is called once, and no parameter of it is read directly (e.g. F.conv2d(x, self.conv.weight)).
        return calls.get(id(modules[name]), 0) != 1 or any(a.startswith(name + ".") for a in attrs)

    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        prev = node.args[0]
        if not isinstance(prev, torch.fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        layer, bn = modules[prev.target], modules[node.target]
        if _foldable(layer, bn) and not used_elsewhere(prev.target) and not used_elsewhere(node.target):
            pairs.append((prev.target, node.target))
    return pairs


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Adjacent (layer, bn) children of every ``nn.Sequential``, at any depth, without overlaps."""
    pairs = []
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        i = 0
        while i < len(children) - 1:
            (a_name, a), (b_name, b) = children[i], children[i + 1]
            if _foldable(a, b):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + a_name, prefix + b_name))
                i += 2
            else:
                i += 1
    return pairs


def fold_model(model: nn.Module) -> nn.Module:
    r"""A copy of an eval-mode model with every foldable conv/linear -> BatchNorm pair folded.

    Introduced in lesson 07. ``model`` is deep-copied and never modified. In the copy each folded
    layer is replaced by ``fold_conv_bn(layer, bn)`` / ``fold_linear_bn(layer, bn)`` and its BN by
    ``nn.Identity()``; the model keeps its class, names and every other module, and stays in eval
    mode. In eval mode ``fold_model(model)(x)`` equals ``model(x)`` up to rounding.

    Which pairs are folded:

    * If ``torch.fx.symbolic_trace(model)`` succeeds, a pair is a ``Conv1d/2d/3d``,
      ``ConvTranspose1d/2d/3d`` or ``Linear`` call whose output is used **only** by a BatchNorm
      call of the matching dimension and channel count that has running statistics (as
      ``torch.fx.experimental.optimization.fuse``). In addition, both modules must be called
      exactly once in the traced forward and their parameters never read directly, because the
      replacement changes the module at every call site.
    * Otherwise (untraceable forward), the fallback walks every ``nn.Sequential`` at any depth and
      folds a foldable layer immediately followed by a foldable BatchNorm child; it assumes each
      ``nn.Sequential`` is run as a whole.

    Layers and BatchNorms are matched by exact type (a subclass may change ``forward``).
    Everything else is left as it is: a BatchNorm *before* a conv, after a pooling or activation,
    after a layer whose output is also used elsewhere (a skip connection), or without running
    statistics. Folding a ``Linear`` assumes 2D activations (N, features), see ``fold_linear_bn``.

    Args:
        model: an ``nn.Module`` whose modules are all in eval mode.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: some module is in training mode (the fold only holds for eval-mode BN; call
            ``model.eval()`` first; the input is never switched silently).

    Example::

        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
        >>> folded = fold_model(model)
        >>> folded
        Sequential(
          (0): Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1))
          (1): Identity()
          (2): ReLU()
        )
        >>> x = torch.randn(2, 1, 6, 6)
        >>> torch.allclose(folded(x), model(x), atol=1e-6)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module (got {type(model).__name__})")
    for name, m in model.named_modules():
        if m.training:
            where = f"model.{name}" if name else "model"
            raise ValueError(
                f"expected model in eval mode (got {where}.training=True): BatchNorm folds only "
                "with its running statistics; call model.eval() first"
            )
    model = copy.deepcopy(model)
    pairs = _fx_pairs(model)
    if pairs is None:
        pairs = _sequential_pairs(model)
    for layer_name, bn_name in pairs:
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        _set_submodule(model, layer_name, _fold_pair(layer, bn))
        _set_submodule(model, bn_name, nn.Identity().eval())  # a new module starts in train mode
    return model
