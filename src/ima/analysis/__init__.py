"""Analyses of trained runs, by topic: the Moons Bayes boundary (:mod:`.boundary`),
choosing a checkpoint by a validation threshold (:mod:`.checkpoints`, appendix C.2/H.1),
a noise level for vanilla adversarial training from IMA's margins
(:mod:`.eps_choice`, appendix C.3), and the images a sample figure shows, in turns from
each class (:mod:`.samples`). Everything here reads run folders, checkpoints and
results; nothing trains."""

from .boundary import BoundaryComparison, compare_boundaries, moons_bayes_score, zero_crossings
from .checkpoints import (
    CheckpointSelection,
    checkpoint_epochs,
    epoch_table,
    eps_max_table,
    evaluate_checkpoints,
    margin_bound,
    select_checkpoint,
    selectable_epochs,
)
from .eps_choice import EpsSuggestion, run_margins, suggest_eps
from .samples import ClassRoundRobin, class_round_robin, samples_by_class

__all__ = [
    "BoundaryComparison",
    "CheckpointSelection",
    "ClassRoundRobin",
    "EpsSuggestion",
    "checkpoint_epochs",
    "class_round_robin",
    "compare_boundaries",
    "epoch_table",
    "eps_max_table",
    "evaluate_checkpoints",
    "margin_bound",
    "moons_bayes_score",
    "run_margins",
    "samples_by_class",
    "select_checkpoint",
    "selectable_epochs",
    "suggest_eps",
    "zero_crossings",
]
