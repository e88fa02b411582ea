"""AutoTinyBERT-style architecture search: a weight-sharing SuperNet over a DistilBERT search space,
trained on sampled archs (MLM or distillation), a measured latency predictor, candidates under a latency
constraint, random / fast / evolved search, exact extraction of any arch into a standalone model, and the
whole pipeline as one command.

    python -m distilbert_jax.nas train --config distilbert_jax/nas/configs/supernet_small.json
    python -m distilbert_jax.nas extract --supernet runs/supernet/supernet --arch "{...}" --out runs/sub
    python -m distilbert_jax.nas latency --supernet runs/supernet --n 300 --out runs/latency
    python -m distilbert_jax.nas candidates --latency runs/latency --constraint 7 --out runs/cands.jsonl
    python -m distilbert_jax.nas search --method evolved --supernet runs/supernet --candidates runs/cands.jsonl
    python -m distilbert_jax.nas task-supernet --supernet runs/supernet --candidates runs/cands.jsonl --out runs/task_fitness
    python -m distilbert_jax.nas pipeline --config distilbert_jax/nas/configs/pipeline_small.json
"""

from .candidates import CandidateSet, Constraint, ConstraintError, read_candidates, select_candidates, write_candidates
from .fitness import CachedFitness, SearchSetup, SearchSetupError, load_search_setup
from .io import SuperNetDirError, extract_to_dir, load_supernet, save_supernet
from .layer_latency import LayerSumPredictor
from .latency import REFERENCE, LatencyDataError, candidates_from_latency, measure_latencies, run_latency
from .pipeline import PipelineConfig, run_pipeline
from .predictor import FlopsBaseline, LatencyPredictor, Predictor, load_predictor
from .search import Evaluation, SearchError, SearchResult, compare_methods, search, write_search
from .space import Arch, ArchError, SearchSpace, arch_from_dict, parse_arch
from .supernet import ArchArrays, Bucket, SuperNet, SuperNetOutput
from .task_fitness import TaskFitness, TaskFitnessConfig, TaskFitnessError, train_task_supernet

# training (`.train.train_supernet`, `.config`) and the jitted steps / `ArchEvaluator` (`.step`) build on
# the training stack and are imported from their modules
__all__ = ["Arch", "ArchArrays", "ArchError", "Bucket", "CachedFitness", "CandidateSet", "Constraint", "ConstraintError",
           "Evaluation", "FlopsBaseline", "LatencyDataError", "LatencyPredictor", "LayerSumPredictor", "PipelineConfig", "Predictor", "REFERENCE",
           "SearchError", "SearchResult", "SearchSetup", "SearchSetupError", "SearchSpace", "SuperNet",
           "SuperNetDirError", "SuperNetOutput", "TaskFitness", "TaskFitnessConfig", "TaskFitnessError", "arch_from_dict", "candidates_from_latency", "compare_methods",
           "extract_to_dir", "load_predictor", "load_search_setup", "load_supernet", "measure_latencies", "parse_arch",
           "read_candidates", "run_latency", "run_pipeline", "save_supernet", "search", "select_candidates", "train_task_supernet",
           "write_candidates", "write_search"]  # fmt: skip
