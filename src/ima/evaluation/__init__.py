"""Evaluation: robustness curves of a model under attacks, their results and checks.

Layout (data flows one way: inputs -> attacks -> engine -> results):

* :mod:`~ima.evaluation.inputs`: batches, input checks, pools of batches;
* :mod:`~ima.evaluation.attacks`: the evaluation attacks, one interface
  (:class:`~ima.evaluation.attacks.EvaluationAttack`), by name in
  :data:`~ima.evaluation.attacks.EVALUATION_ATTACKS`;
* :mod:`~ima.evaluation.engine`: :func:`evaluate`, which only orchestrates;
* :mod:`~ima.evaluation.sanity`: the sanity checks every result carries;
* :mod:`~ima.evaluation.results`: :class:`EvaluationResult`, AUC, :func:`save_result`;
* :mod:`~ima.evaluation.run_folder`: :func:`evaluate_run`, a run folder's evaluation;
* :mod:`~ima.evaluation.segmentation`: segmentations under attack, for figures.
"""

from .attacks import EVALUATION_ATTACKS, EvaluationAttack, evaluation_attack
from .engine import evaluate
from .results import SCHEMA_VERSION, EvaluationResult, auc, save_result
from .run_folder import evaluate_run
from .segmentation import AttackedSegmentation, segment_under_attack

__all__ = [
    "EVALUATION_ATTACKS",
    "SCHEMA_VERSION",
    "AttackedSegmentation",
    "EvaluationAttack",
    "EvaluationResult",
    "auc",
    "evaluate",
    "evaluate_run",
    "evaluation_attack",
    "save_result",
    "segment_under_attack",
]
