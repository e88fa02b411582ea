"""AutoTinyBERT-style architecture search: a weight-sharing SuperNet over a DistilBERT search space,
trained on sampled archs (MLM or distillation), and exact extraction of any arch into a standalone
model.

    python -m distilbert_jax.nas train --config distilbert_jax/nas/configs/supernet_small.json
    python -m distilbert_jax.nas extract --supernet runs/supernet/supernet --arch "{...}" --out runs/sub
"""

from .space import Arch, ArchError, SearchSpace, arch_from_dict, parse_arch
from .supernet import ArchArrays, Bucket, SuperNet, SuperNetOutput

__all__ = ["Arch", "ArchArrays", "ArchError", "Bucket", "SearchSpace", "SuperNet", "SuperNetOutput",
           "arch_from_dict", "parse_arch"]  # fmt: skip
