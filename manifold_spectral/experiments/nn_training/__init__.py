"""Low-precision NN training with ``SpectralKron`` beside AdamW, SOAP and Muon (paper Sec. 4.4,
Fig. 4, 10-12), at CPU scale: the experiment behind ``manifold-spectral reproduce nn``.

One module per part, each importing only the ones above it:

* ``models``: ``MLP`` and ``TinyGPT`` (a small pre-LayerNorm causal transformer);
* ``tasks``: the synthetic tasks ``MarkovTask`` (``transformer``) and ``TeacherTask``
  (``mlp``), and ``make_task``, which also builds the real-data ones of ``real_tasks``;
* ``optimizers``: the registry of the compared methods (``OPTIMIZERS``, ``ABLATIONS``,
  ``PAPER_SCHEME``, ``build_optimizer``);
* ``run_cache``: a directory of finished runs, keyed by everything that determines them;
* ``training``: ``train`` (one run, with ``lr_schedule``) and ``run_quality`` (random search,
  refinement rounds of the best lr, then the best trial on the evaluation seeds; resumable
  through ``run_cache``);
* ``report``: ``format_table`` and ``plot`` of a ``QualityResult``.

Every name is re-exported here, so ``from manifold_spectral.experiments.nn_training import
TinyGPT, build_optimizer, lr_schedule`` (what ``benchmarks/gpu_train.py`` uses) works as
before the split.
"""

from .models import MLP, Block, TinyGPT
from .optimizers import (
    ABLATIONS,
    OPTIMIZERS,
    PAPER_SCHEME,
    OptimizerSpec,
    build_optimizer,
    lr_neighbours,
    optimizer_spec,
)
from .report import format_table, plot
from .tasks import TASKS, MarkovTask, TeacherTask, make_task
from .training import (
    DEFAULT_STEPS,
    QualityResult,
    Run,
    TaskResult,
    cached_train,
    lr_schedule,
    run_quality,
    train,
)

__all__ = [
    "MLP",
    "Block",
    "TinyGPT",
    "MarkovTask",
    "TeacherTask",
    "TASKS",
    "make_task",
    "PAPER_SCHEME",
    "OptimizerSpec",
    "OPTIMIZERS",
    "ABLATIONS",
    "optimizer_spec",
    "build_optimizer",
    "lr_neighbours",
    "Run",
    "lr_schedule",
    "train",
    "DEFAULT_STEPS",
    "TaskResult",
    "QualityResult",
    "run_quality",
    "cached_train",
    "format_table",
    "plot",
]
