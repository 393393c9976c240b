"""coursekit: the helpers behind "Batch Normalization, hands-on".

One module per concern:

* ``coursekit.reference``: reference maths (functional BN/LN/IN/GN/RMSNorm, backward, a
  ``BatchNorm`` module, folding) mirroring ``torch.nn.functional`` so either can stand in for the other;
* ``coursekit.checks``: instant feedback for the exercise notebooks;
* ``coursekit.grader`` / ``coursekit.build``: the grader and the exercise builder behind the CLI;
* ``coursekit.tasks``: the graded tasks (names, cells, points);
* ``coursekit.lab``: lesson helpers (data sets, small models and training loops, experiments,
  figures, multi-process statistics), apart from grading;
* ``coursekit.env``: notebook setup and the environment report behind ``coursekit doctor``.

Submodules are imported on demand so ``import coursekit`` stays cheap.
"""
from coursekit.env import setup_notebook

__all__ = ["setup_notebook", "__version__"]
__version__ = "0.1.0"
