"""Counter-settings for the solved exercise 06: each try-cell's verdict re-run with a wrong answer."""
from counter_support import Counter

COUNTERS = [
    Counter("try-predict", setup="""
model = copy.deepcopy(model)


def predict(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)
""", why="a predict that switches to eval mode and never restores the previous mode"),
    Counter("try-recalibrate", setup="""
from torch.optim.swa_utils import update_bn
model = copy.deepcopy(model)


def recalibrate(model, loader):
    update_bn(loader, model)
    return model.eval()
""", why="a recalibrate that re-estimates the statistics (num_batches_tracked still 4) but leaves the model in "
          "eval mode"),
]
