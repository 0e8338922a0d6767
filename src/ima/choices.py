"""The names the command line offers, importable without torch (``ima --help`` and argument
errors answer at once): the evaluation attacks, AutoAttack's versions and components.
The modules that implement them take their names from here."""

from __future__ import annotations

__all__ = ["AUTOATTACK_COMPONENTS", "AUTOATTACK_VERSIONS", "EVALUATION_ATTACK_NAMES"]

#: the evaluation attacks, in the order of :data:`ima.evaluation.attacks.EVALUATION_ATTACKS`
EVALUATION_ATTACK_NAMES = ("pgd", "spsa", "uniform-noise", "gaussian-noise", "autoattack",
                           "autoattack-art", "ddn-min", "bpgd-min")

#: every AutoAttack component (``apgd-margin`` is ours: APGD on the task's margin loss,
#: the segmentation stand-in for APGD-DLR)
AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-margin", "apgd-t", "fab-t", "square")
#: AutoAttack's versions and their components for classifiers
AUTOATTACK_VERSIONS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
