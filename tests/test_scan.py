"""coursekit.grader.scan: the static scan's gaps are closed (star imports, magics, tasks defined in another cell)."""
from coursekit.grader.scan import defined_and_used, forbidden_uses, with_helpers

NORM_NAMES = frozenset({"batch_norm", "layer_norm", "group_norm", "instance_norm", "BatchNorm2d"})  # as a task lists them
SWA = frozenset({"update_bn", "swa_utils"})


def _scan(answers, cid, names):
    sources = with_helpers(answers, cid)
    own = frozenset().union(*(defined_and_used(s)[0] for s in sources))
    return sorted({f for s in sources for f in forbidden_uses(s, names, own)})


def test_a_star_import_and_a_rebinding_are_not_the_learners_own():
    src = ("from torch.nn.functional import *\nbatch_norm = batch_norm\n"
           "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
           "    return batch_norm(x, None, None, gamma, beta, training=True, eps=eps)\n")
    assert defined_and_used(src)[0] == {"batch_norm_train"}  # the assignment defines nothing of theirs
    assert _scan({"answer-batch_norm_train": src}, "answer-batch_norm_train", NORM_NAMES) == [
        "batch_norm", "from torch.nn.functional import *"]
    assert forbidden_uses("from torch import *\ny = relu(x)", NORM_NAMES) == ["from torch import *"]
    assert forbidden_uses("from math import *", NORM_NAMES) == []
    assert forbidden_uses("from coursekit.reference import *", frozenset()) == [
        "coursekit.reference", "from coursekit.reference import *"]
    # a real def of one's own layer_norm stays allowed
    own = "def layer_norm(x, s):\n    return x\ndef group_norm(x, g):\n    return layer_norm(x, x.shape[1:])\n"
    assert _scan({"answer-group_norm": own}, "answer-group_norm", NORM_NAMES) == []


def test_the_bodies_of_magics_are_scanned():
    assert forbidden_uses("%%capture\ny = F.batch_norm(x, None, None, training=True)\n", NORM_NAMES) == ["batch_norm"]
    assert forbidden_uses("%%time\ndef f(x):\n    return F.layer_norm(x, x.shape[1:])\n", NORM_NAMES) == ["layer_norm"]
    assert forbidden_uses("%time y = torch.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, False)",
                          NORM_NAMES) == ["batch_norm"]
    assert forbidden_uses("%%capture out\n%time y = F.group_norm(x, 2)\n", NORM_NAMES) == ["group_norm"]
    assert forbidden_uses("%%capture\ny = x.mean()\n", NORM_NAMES) == []
    assert forbidden_uses("%%bash\necho not python (\n", NORM_NAMES) == []


def test_a_task_is_scanned_whichever_answer_cell_defines_it():
    answers = {
        "answer-predict": ("from torch.optim.swa_utils import update_bn\n"
                           "def predict(model, x):\n    return model(x)\n"
                           "def recalibrate(model, loader):\n    update_bn(loader, model)\n    return model\n"),
        "answer-recalibrate": "# recalibrate is defined in the cell above\n",
        "answer-freeze_batchnorm": "def freeze_batchnorm(model):\n    return model\n",
    }
    assert _scan(answers, "answer-recalibrate", SWA) == ["swa_utils", "update_bn"]
    assert _scan(answers, "answer-freeze_batchnorm", SWA) == []  # unrelated cells are not dragged in
    # a helper lent through an assignment is still scanned with the task that uses it
    lent = {"answer-a": "from torch.optim import swa_utils\nhelper = swa_utils.update_bn\n",
            "answer-recalibrate": "def recalibrate(model, loader):\n    helper(loader, model)\n    return model\n"}
    assert _scan(lent, "answer-recalibrate", SWA) == ["swa_utils", "update_bn"]


def test_touching_the_graders_code_in_the_kernel_is_reported():
    for src in ("_coursekit_run_case = lambda *a: {'ok': True}", "_COURSEKIT_IO['np_savez'] = print",
                "globals()['_coursekit_probe'] = None", "import builtins\nx = builtins._coursekit_x"):
        assert forbidden_uses(src, frozenset()) == ["the grader's _coursekit internals"], src
    assert forbidden_uses("coursekit_like = 1\ny = 'my_coursekit'", frozenset()) == []
