"""Counter-settings of lesson 07's checked verdicts (see tests/counter_support.py)."""
from counter_support import Counter

# The lesson's generator `g` is advanced by the cells that use it: a counter works on a copy.
G_COPY = """
_g = g
g = torch.Generator()
g.set_state(_g.get_state())
"""

# A copy of `coursekit.reference` whose functions a counter may rebind.
REF_COPY = """
import types as _types
_ref = ref
ref = _types.SimpleNamespace(**{name: getattr(_ref, name) for name in _ref.__all__})
"""

# Exercise 07's known wrong answer: the layer's own bias left out of the folded bias.
BIAS_IGNORED = REF_COPY + """

def _without_bias(layer):
    layer = copy.deepcopy(layer)
    layer.bias = None
    return layer


ref.fold_conv_bn = lambda conv, bn: _ref.fold_conv_bn(_without_bias(conv), bn)
ref.fold_linear_bn = lambda linear, bn: _ref.fold_linear_bn(_without_bias(linear), bn)
"""

# A fold_model that removes each BN inside an nn.Sequential without folding it.
DROP_BN = REF_COPY + """

def _drop_bn(model):
    out = copy.deepcopy(model)
    for module in out.modules():
        if isinstance(module, nn.Sequential):
            for i, child in enumerate(module):
                if isinstance(child, nn.BatchNorm2d):
                    module[i] = nn.Identity()
    return out.eval()


ref.fold_model = _drop_bn
"""

# The seed's fuse with its branch fixed, or with the special branch on every call; both count calls
# in this counter's own `calls`, never in the lesson's.
FIXED_FUSE = """
calls = 0


def seed_like_fuse(conv, bn):
    global calls
    calls += 1
    return ref.fold_conv_bn(conv, bn)
"""
SPECIAL_FUSE = """
calls = 0


def seed_like_fuse(conv, bn):
    global calls
    calls += 1
    std = torch.sqrt(bn.running_var + bn.eps)
    new = copy.deepcopy(conv)
    new.bias = nn.Parameter((conv.bias - bn.running_mean + bn.bias * std).detach())
    return new.eval()
"""

# The BN of `conv_bn_pair` frozen in eval mode (lesson 06 (f)): `.train()` leaves it in eval mode.
FROZEN_PAIR = """
class _FrozenBN(nn.BatchNorm2d):
    def train(self, mode=True):
        return super().train(False)


_pair = conv_bn_pair


def conv_bn_pair(*args, **kwargs):
    conv, bn = _pair(*args, **kwargs)
    frozen = _FrozenBN(bn.num_features, dtype=bn.running_mean.dtype)
    frozen.load_state_dict(bn.state_dict())
    return conv, frozen.eval()
"""

COUNTERS = [
    Counter("c05", setup="""
_pair = conv_bn_pair
conv_bn_pair = lambda *args, **kwargs: (lambda conv, bn: (conv, bn.train()))(*_pair(*args, **kwargs))
""", why="BN in training mode: it normalizes with the batch's statistics, which no fixed fold reproduces"),
    Counter("c08", setup=G_COPY + BIAS_IGNORED,
            why="a fold that ignores the conv's own bias (exercise 07's known wrong answer)",
            lines=("folded == unfused", "fuse_conv_bn_eval")),
    Counter("c08", setup=G_COPY + REF_COPY + """

def _fold_in_place(conv, bn):
    folded = _ref.fold_conv_bn(conv, bn)
    with torch.no_grad():
        conv.weight.copy_(folded.weight)   # the fold written into the caller's conv
    return folded


ref.fold_conv_bn = _fold_in_place
""", why="a fold that writes the folded weight into the conv it was given", lines=("inputs unchanged",)),
    Counter("c10", setup=G_COPY + BIAS_IGNORED,
            why="a fold that ignores the linear layer's own bias (exercise 07's known wrong answer)"),
    Counter("c12", setup=FROZEN_PAIR,
            why="BN frozen in eval mode, as when fine-tuning with frozen BN: then training mode does not "
                "look at the batch", lines=("train-mode BN",)),
    Counter("c12", setup=REF_COPY + """
ref.fold_conv_bn = lambda conv, bn: nn.Sequential(conv, copy.deepcopy(bn).train())
""", why="a 'fold' that keeps BN in training mode after the conv: a function of the batch, not a fixed map",
         lines=("folded conv",)),
    Counter("c18", setup=DROP_BN, why="BN removed without folding it into the conv",
            lines=("folded ==", "same predictions", "same test accuracy")),
    Counter("c18", setup=REF_COPY + """
model = copy.deepcopy(model)


def _fold_in_place(m):
    for i in range(1, len(m)):
        if isinstance(m[i], nn.BatchNorm2d) and isinstance(m[i - 1], nn.Conv2d):
            m[i - 1], m[i] = _ref.fold_conv_bn(m[i - 1], m[i]), nn.Identity()
    return m


ref.fold_model = _fold_in_place
""", why="a fold_model that folds the model it is given instead of a copy (exercise 07's known wrong "
         "answer 'mutates_original')", lines=("model unchanged",)),
    Counter("c19", setup=REF_COPY + """
ref.fold_model = lambda m: _ref.fold_model(copy.deepcopy(m).float()).double()
""", why="the fold computed in float32 and cast to float64 afterwards: float32 rounding, above 1e-10"),
    Counter("predict-train-mode-run", setup="""
torch.manual_seed(0)
model = small_cnn(norm=None, channels=8).eval()
with torch.no_grad():
    out_folded = ref.fold_model(model)(digits.x_test)
""", why="a CNN without BN: training and eval mode compute the same function"),
    Counter("c21", setup=G_COPY + REF_COPY + """

def _fold_blindly(block):
    out = copy.deepcopy(block)
    out.conv, out.bn = _ref.fold_conv_bn(block.conv, block.bn), nn.Identity()
    out.conv2, out.bn2 = _ref.fold_conv_bn(block.conv2, block.bn2), nn.Identity()
    return out


ref.fold_model = _fold_blindly
""", why="a fold that ignores the second use of conv's output and folds bn into it anyway",
         lines=("folded == block",)),
    Counter("c21-fallback", setup=G_COPY + """

class BranchyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return y if x.mean() > 0 else -y
""", why="an untraceable model whose conv and BN are plain attributes, not in an nn.Sequential: the "
         "fallback has no pair to fold", lines=("BN folded",)),
    Counter("c21-fallback", setup=G_COPY + """

class BranchyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x):
        return self.body(x)
""", why="the same model without its branch on the data: torch.fx traces it", lines=("torch.fx can trace",)),
    Counter("c21-fallback", setup=G_COPY + DROP_BN, why="BN removed without folding it into the conv",
            lines=("folded == model",)),
    Counter("c28", setup=FIXED_FUSE, why="the fuse without its call-counter branch",
            lines=tuple(f"call {n}:" for n in range(2, 8))),
    Counter("c28", setup=SPECIAL_FUSE, why="the special branch taken on every call", lines=("call 1:", "call 8:")),
    Counter("c29", setup=FIXED_FUSE, why="the fuse without its call-counter branch: BN with gamma, not sigma * BN "
                                         "with gamma = 1"),
    Counter("c31", setup=FIXED_FUSE, why="a fuse that copies the conv: reflect padding kept, border exact",
            lines=("reflect padding",)),
    Counter("c31", setup=SPECIAL_FUSE, why="the special branch on a 'good' call: wrong everywhere, interior included",
            lines=("reflect padding",)),
    Counter("c33", setup=BIAS_IGNORED, why="a fold that ignores the conv's own bias"),
    Counter("c36", setup="""
bn_first = copy.deepcopy(bn_first)
with torch.no_grad():
    _s = bn_first.weight / torch.sqrt(bn_first.running_var + bn_first.eps)
    bn_first.bias.copy_(_s * bn_first.running_mean)   # shift t = beta - s * mu = 0
    err_map = (fold_bn_into_next_conv(bn_first, conv_after)(x) - conv_after(bn_first(x))).abs()
""", why="a BN whose shift t is 0: zero padding then commutes with it and the border is exact",
         lines=("border mean error",)),
    Counter("c36", setup="""

def fold_bn_into_next_conv(bn, conv):
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = copy.deepcopy(conv)
    with torch.no_grad():
        folded.weight.mul_(s.reshape(1, -1, 1, 1))   # the shift t forgotten
    return folded


with torch.no_grad():
    err_map = (fold_bn_into_next_conv(bn_first, conv_after)(x) - conv_after(bn_first(x))).abs()
""", why="a fold into the next conv that forgets BN's shift t: wrong everywhere, whatever the padding",
         lines=("interior", "exact everywhere")),
]
