"""Lesson helpers: data sets, small models and training loops, experiments, figures, multi-process BN.

Nothing here takes part in grading. A lesson imports the module it needs:

* ``coursekit.lab.data``: the synthetic parabola (lesson 01) and scikit-learn's bundled digits;
* ``coursekit.lab.training``: small MLP/CNN builders, ``fit``, metrics, per-layer outputs;
* ``coursekit.lab.why_normalize``: lesson 01's experiments (many small MLPs trained side by side);
* ``coursekit.lab.diagnostics``: per-layer statistics recorded during training (lesson 01);
* ``coursekit.lab.experiments``: batch schedules, many-seed sweeps, BN snapshots (lesson 06);
* ``coursekit.lab.plots``: the course's figures;
* ``coursekit.lab.distributed``: cross-process BN statistics over gloo (lesson 08).

Submodules are imported on demand so ``import coursekit.lab`` stays cheap.
"""
__all__ = ["data", "training", "why_normalize", "diagnostics", "experiments", "plots", "distributed"]
