"""AutoTinyBERT-style architecture search: a weight-sharing SuperNet over a DistilBERT search space,
trained on sampled archs (MLM or distillation), and exact extraction of any arch into a standalone
model.

    python -m distilbert_jax.nas train --config distilbert_jax/nas/configs/supernet_small.json
    python -m distilbert_jax.nas extract --supernet runs/supernet/supernet --arch "{...}" --out runs/sub
    python -m distilbert_jax.nas latency --supernet runs/supernet --n 300 --out runs/latency
    python -m distilbert_jax.nas candidates --latency runs/latency --constraint 7 --out runs/cands.jsonl
"""

from .candidates import CandidateSet, Constraint, ConstraintError, read_candidates, select_candidates, write_candidates
from .io import SuperNetDirError, extract_to_dir, load_supernet, save_supernet
from .latency import REFERENCE, LatencyDataError, candidates_from_latency, measure_latencies, run_latency
from .predictor import FlopsBaseline, LatencyPredictor
from .space import Arch, ArchError, SearchSpace, arch_from_dict, parse_arch
from .supernet import ArchArrays, Bucket, SuperNet, SuperNetOutput

# training (`.train.train_supernet`, `.config`) and the jitted steps / `ArchEvaluator` (`.step`) build on
# the training stack and are imported from their modules
__all__ = ["Arch", "ArchArrays", "ArchError", "Bucket", "CandidateSet", "Constraint", "ConstraintError", "FlopsBaseline",
           "LatencyDataError", "LatencyPredictor", "REFERENCE", "SearchSpace", "SuperNet", "SuperNetDirError",
           "SuperNetOutput", "arch_from_dict", "candidates_from_latency", "extract_to_dir", "load_supernet",
           "measure_latencies", "parse_arch", "read_candidates", "run_latency", "save_supernet", "select_candidates",
           "write_candidates"]  # fmt: skip
