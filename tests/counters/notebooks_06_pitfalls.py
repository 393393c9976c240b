"""Counter-settings for lesson 06 (pitfalls): each checked verdict re-run where its claim is false."""
from counter_support import Counter

COUNTERS = [
    # (a) forgetting model.eval()
    Counter("c06", setup="""
eval_copy, train_copy = copy.deepcopy(model).eval(), copy.deepcopy(model).train()
forgot_eval = eval_copy
with torch.no_grad():
    logits_train = {c: eval_copy(batch_with(c))[0] for c in (0, 1, 7)}
    logits_eval = {c: train_copy(batch_with(c))[0] for c in (0, 1, 7)}
""", why="the two modes swapped: the 'training-mode' forwards run on an eval-mode copy (no batch statistics, "
          "no statistics updated) and the 'eval-mode' ones on a training-mode copy"),
    Counter("c09", setup="""
runs = [predict_in_batches(copy.deepcopy(model).eval(), data.x_test, 4, seed) for seed in range(5)]
train_preds = torch.stack([p[kept] for p, _ in runs])
flips = (train_preds != train_preds[0]).any(dim=0).float().mean().item()
acc_train = (train_preds == truth).float().mean(dim=1)
""", why="the bug fixed: the batches of 4 predicted by an eval-mode copy, so no prediction depends on its batch"),
    # (c) small batches
    Counter("0cad7e29", setup="""
small = copy.copy(small)
small.accuracy = {"bn": small.accuracy["gn"], "gn": small.accuracy["gn"]}
""", why="a norm without batch dependence in BN's place (the GN runs on both sides: GN vs GN, measured "
          "accuracies reused, a re-run of the sweep would take ~10 s)",
            lines=("at batch 2, GN beats BN", "BN's median falls")),
    Counter("0cad7e29", setup="""
small = copy.copy(small)
small.accuracy = {"bn": {b: small.accuracy["bn"][2] for b in small.batch_sizes}, "gn": small.accuracy["gn"]}
""", why="a BN that stays as broken at every batch size as at batch 2 (its measured batch-2 accuracies "
          "substituted at every size: a sweep where BN is not level from batch 4 up)",
            lines=("at every batch size >= 4",)),
    Counter("42f6c8c1", setup="""
normalized = {2: (first_bn_normalized(small.models[("bn", 2)][0], 32)[0], normalized[2][0]),
              32: (first_bn_normalized(small.models[("bn", 32)][0], 2)[0], normalized[32][1])}
""", why="batch sizes swapped in training mode (the batch-2 model normalized over batches of 32, the batch-32 "
          "model over pairs) and the batch-2 model's eval mode replaced by the statistics of pairs "
          "(model.eval() forgotten)"),
    Counter("9b4efbc1", setup="""
at2, at32 = at32, at2
""", why="the batch-32 models in the batch-2 role and vice versa: statistics, recalibration and the two "
          "modes of well-trained models", lines=("noisier", "still below GN", "batch 32:", "batch 2: training mode")),
    Counter("9b4efbc1", setup="""
recovered = []
for trained, gn in zip(small.models[("bn", 32)], small.accuracy["gn"][2]):
    spoiled = copy.deepcopy(trained)
    for bn in (m for m in spoiled.modules() if isinstance(m, nn.BatchNorm1d)):
        bn.reset_running_stats()
    as_trained = accuracy(spoiled, data.x_test, data.y_test)
    update_bn(loader(data.x_train), spoiled)
    recovered.append((accuracy(spoiled, data.x_test, data.y_test) - as_trained) / (gn - as_trained))
""", why="models whose only damage is in the running statistics (batch-32 models with their statistics reset "
          "to mean 0, variance 1): update_bn recovers the whole gap", lines=("recovers less than half",)),
    Counter("2cce5a44", setup="""
noise = batch_mean_spread((("CNN", model, nn.BatchNorm2d), ("MLP", mlp32, nn.BatchNorm1d)),
                          draw=lambda n, b, g: torch.randint(n, (300, 1), generator=g).expand(300, b))
""", why="batches made of b copies of one image (perfectly correlated batch-mates): the batch mean does not "
          "average noise away, so no 1/sqrt(b)", lines=("1/sqrt(b)",)),
    Counter("2cce5a44", setup="""
noise = batch_mean_spread((("CNN", mlp32, nn.BatchNorm1d), ("MLP", mlp32, nn.BatchNorm1d)))
""", why="a network whose BN averages m = N values (the MLP) in the CNN's place", lines=("steadier",)),
    # (d) conv bias before BN
    Counter("c23", setup="""
def _eval_bn_rel(dtype):
    cb, bn = copy.deepcopy(conv_b).to(dtype), nn.BatchNorm2d(8).to(dtype).eval()
    out = bn(cb(x.to(dtype)))
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)).sum().backward()
    return float(cb.bias.grad.abs().max() / cb.weight.grad.abs().max())


rel32, rel64 = _eval_bn_rel(torch.float32), _eval_bn_rel(torch.float64)
bn_b, bn_nb = nn.BatchNorm2d(8).eval(), nn.BatchNorm2d(8).eval()
with torch.no_grad():
    y_b, y_nb = bn_b(conv_b(x)), bn_nb(conv_nb(x))
""", why="BN in eval mode with fresh statistics (mean 0, variance 1): nothing subtracts the batch mean, so the "
          "bias passes through, gets a gradient, and the running mean never moves"),
    # (e) placement
    Counter("f96e409c", setup="""
z = bn_input_relu_first
""", why="BN placed after the ReLU: the claim about what BN sees in conv->BN->ReLU, evaluated on the rectified map",
            lines=("conv->BN->ReLU: BN sees",)),
    Counter("f96e409c", setup="""
with torch.no_grad():
    positive = nn.Conv2d(1, 8, 3, padding=1)
    positive.weight.abs_()
    positive.bias.fill_(0.1)
    bn_input_relu_first = F.relu(positive(data.x_train))
out_relu_first = F.batch_norm(bn_input_relu_first, None, None, training=True)
lowest = out_relu_first.amin(dim=(0, 2, 3), keepdim=True)
""", why="a conv with non-negative weights and a positive bias on the non-negative digits: every pre-activation "
          "is positive, the ReLU removes nothing, and BN after it sees no spike at zero",
            lines=("conv->ReLU->BN",)),
    Counter("order-check", setup="""
order_acc = placement_accuracy(data, seeds=(0, 1, 2), steps=200, steps_relu_first=15)
""", why="the conv->ReLU->BN networks stopped after 15 steps: one order trained and the other not"),
    # (f) how to freeze
    Counter("c27", setup="""
model = copy.deepcopy(model)
for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.track_running_stats = False
        m.running_mean = m.running_var = m.num_batches_tracked = None
""", why="BN layers that keep no running statistics (track_running_stats=False): no recipe can change them",
            lines=("nothing frozen", "requires_grad=False only", "then a loop calling")),
    Counter("c27", setup="""
import types
model = copy.deepcopy(model)
for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, True), m)
""", why="BN layers whose train() override refuses eval mode (the mirror image of the exercise's freeze): "
          ".eval() no longer stops the statistics", lines=(".eval() only", "both ")),
    # (g) update_bn
    Counter("c30", setup="""
table = [(seed, a, a, c, c) for seed, a, _, c, _ in table]
""", why="a recalibration that does nothing (accuracy after = before; re-running update_bn as a no-op would "
          "give the same numbers)", lines=("shifted images", "mean clean accuracy", "spread")),
    Counter("c30", setup="""
wrong = []
for trained in short_runs.models[("bn", 32)]:
    m = copy.deepcopy(trained)
    update_bn(loader(shifted_train), m)
    wrong.append(accuracy(m, data.x_test, data.y_test))
table = [(seed, a, w, c, d) for (seed, a, _, c, d), w in zip(table, wrong)]
""", why="update_bn run on the wrong data: the clean-image models recalibrated on contrast-shifted images",
            lines=("lowers no seed",)),
    Counter("c32", setup="""
def update_bn(batches, net):
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.cat(list(batches)))
""", why="a hand-written recalibration over the whole training set as one batch (an average over samples, not "
          "over batches) that leaves the model in training mode with momentum None"),
    # (g) when to freeze
    Counter("freeze-when-check", setup="""
by_recipe = finetune_bn_recipes(pretrained, data, steps=10, lr=1e-3, batch_size=32, seeds=short_runs.seeds)
""", why="no shift: fine-tuned and tested on the clean images, whose statistics the pretrained models already hold",
            lines=("beats frozen", "above trainable")),
    Counter("freeze-when-check", setup="""
same_camera = by_recipe
""", why="the shifted images in the place of the unshifted ones (the measured shifted-image run, reused)",
            lines=("on unshifted images",)),
]
