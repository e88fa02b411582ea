"""AutoTinyBERT-style architecture search: a weight-sharing SuperNet over a DistilBERT search space,
trained on sampled archs (MLM or distillation), and exact extraction of any arch into a standalone
model.

    python -m distilbert_jax.nas train --config distilbert_jax/nas/configs/supernet_small.json
    python -m distilbert_jax.nas extract --supernet runs/supernet/supernet --arch "{...}" --out runs/sub
    python -m distilbert_jax.nas search --method evolved --supernet runs/supernet --candidates runs/cands.jsonl
"""

from .fitness import CachedFitness, SearchSetup, SearchSetupError, load_search_setup
from .io import SuperNetDirError, extract_to_dir, load_supernet, save_supernet
from .search import Evaluation, SearchError, SearchResult, compare_methods, search, write_search
from .space import Arch, ArchError, SearchSpace, arch_from_dict, parse_arch
from .supernet import ArchArrays, Bucket, SuperNet, SuperNetOutput

# training (`.train.train_supernet`, `.config`) and the jitted steps / `ArchEvaluator` (`.step`) build on
# the training stack and are imported from their modules
__all__ = ["Arch", "ArchArrays", "ArchError", "Bucket", "CachedFitness", "Evaluation", "SearchError", "SearchResult",
           "SearchSetup", "SearchSetupError", "SearchSpace", "SuperNet", "SuperNetDirError", "SuperNetOutput",
           "arch_from_dict", "compare_methods", "extract_to_dir", "load_search_setup", "load_supernet", "parse_arch",
           "save_supernet", "search", "write_search"]  # fmt: skip
