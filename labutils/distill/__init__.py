"""Lab 02, distillation: the KD losses and sparse teacher targets (``losses``), an on-disk store of teacher
targets (``store``), on-policy distillation against the oracle (``onpolicy``), the shipped teacher
(``teacher``; re-trained with ``python -m labutils.distill.teacher``), the training recipes (``recipes``), the
stored experiments (``grid``: ``python -m labutils.distill.grid``) and the notebook's checkers (``checks``).

    >>> import torch
    >>> from labutils.distill import kd_loss
    >>> kd_loss(torch.zeros(3, 5), torch.zeros(3, 5))
    tensor(0.)
"""

from labutils.distill.checks import (
    check_jsd,
    check_kd_loss,
    check_onpolicy_loss,
    check_reverse_kl,
    check_soft_and_hard_grads,
    check_target_bytes,
    check_topk_targets,
)
from labutils.distill.losses import (
    DIVERGENCES,
    distinct_sampled_targets,
    kd_loss,
    sampled_targets,
    sparse_bytes_per_token,
    sparse_kd_loss,
    topk_targets,
)
from labutils.distill.onpolicy import exposure_bias, gkd_hook, onpolicy_loss, sample_student, sequence_reverse_kl
from labutils.distill.store import GEMMA3_SAMPLES, GEMMA3_VOCAB, HEADER_BYTES, ShardError, TeacherStore, target_bytes

# The teacher's names load on first use: ``python -m labutils.distill.teacher`` must find its module not yet
# imported, or runpy would run a second copy of it.
_TEACHER = ("TEACHER_CONFIG", "TEACHER_RUN", "load_teacher", "shipped_eval_loss", "train_teacher")


def __getattr__(name):
    if name in _TEACHER:
        from labutils.distill import teacher

        return getattr(teacher, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DIVERGENCES", "distinct_sampled_targets", "kd_loss", "sampled_targets", "sparse_bytes_per_token",
    "sparse_kd_loss", "topk_targets", "exposure_bias", "gkd_hook", "onpolicy_loss", "sample_student", "sequence_reverse_kl",
    "GEMMA3_SAMPLES", "GEMMA3_VOCAB", "HEADER_BYTES", "ShardError", "TeacherStore", "target_bytes", "check_jsd",
    "check_kd_loss", "check_onpolicy_loss", "check_reverse_kl", "check_soft_and_hard_grads", "check_target_bytes", "check_topk_targets",
    *_TEACHER
]
