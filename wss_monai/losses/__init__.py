"""wss-monai loss terms: one module per family, all called as ``term(probs, **batch)`` (see ``base``).

Size constraints and their optimisers (Kervadec et al., MedIA 2019): ``PartialCrossEntropy``,
``SizePenalty``, ``LogBarrierPenalty``, ``LagrangianProposalLoss``. Priors (2021 slides, eq. 8):
``EntropyMinimization``, ``ClassProportionKL``, ``ClassRatioPenalty``, ``MomentPenalty``,
``CentroidPenalty``. Regularized losses (Tang et al., ECCV 2018; Obukhov et al., 2019):
``DenseCRFLoss``, ``NormalizedCutLoss``, ``KernelCutLoss``, ``GatedCRFLoss``, with the affinity
filters of ``affinity``. ``WeakSupervisionLoss`` composes a regime's weighted terms from config.
"""

from wss_monai.losses.base import UNANNOTATED, LossTerm
from wss_monai.losses.cuts import KernelCutLoss, NormalizedCutLoss
from wss_monai.losses.dense_crf import DenseCRFLoss
from wss_monai.losses.gated_crf import GatedCRFLoss
from wss_monai.losses.lagrangian import LagrangianProposalLoss, Proposals
from wss_monai.losses.log_barrier import LogBarrierPenalty, extended_log_barrier
from wss_monai.losses.partial_ce import CrossEntropy, PartialCrossEntropy
from wss_monai.losses.priors import CentroidPenalty, ClassProportionKL, ClassRatioPenalty, EntropyMinimization, MomentPenalty
from wss_monai.losses.size import SizeConstraintTerm, SizePenalty, bounds_from_tags
from wss_monai.losses.weak_supervision import WeakSupervisionLoss, build_term, parse_terms_config

__all__ = [
    "UNANNOTATED",
    "LossTerm",
    "PartialCrossEntropy",
    "CrossEntropy",
    "SizeConstraintTerm",
    "SizePenalty",
    "bounds_from_tags",
    "LogBarrierPenalty",
    "extended_log_barrier",
    "LagrangianProposalLoss",
    "Proposals",
    "EntropyMinimization",
    "ClassProportionKL",
    "ClassRatioPenalty",
    "MomentPenalty",
    "CentroidPenalty",
    "DenseCRFLoss",
    "NormalizedCutLoss",
    "KernelCutLoss",
    "GatedCRFLoss",
    "WeakSupervisionLoss",
    "build_term",
    "parse_terms_config",
]
