"""distilbert_jax: DistilBERT in JAX/Flax — every head, Hugging Face weights both ways, tokenizer; BERT,
RoBERTa / XLM-RoBERTa / CamemBERT and ELECTRA checkpoints in the same encoder code."""

from .config import DistilBertConfig, small_config
from .cpu import CpuInfo, read_cpu
from .gemm import GemmChoice, configure_cpu
from .heads import (
    ALL_HEADS,
    HEADS,
    DistilBertForMaskedLM,
    DistilBertForMultipleChoice,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    ElectraForPreTraining,
    HeadOutput,
    build_model,
    heads_of,
    init_params,
)
from .inference import Answer, answer_questions, decode_answer, embed
from .modeling import DistilBertModel, EncoderOutput, check_input_ids, checked_apply
from .pretrained import from_pretrained, load_state_dict, save_pretrained
from .tokenizer import Batch, Tokenizer
from .weights import LoadReport, WeightsError, hf_to_params, params_to_hf

__version__ = "0.1.0"

__all__ = [
    "ALL_HEADS",
    "Answer",
    "Batch",
    "CpuInfo",
    "DistilBertConfig",
    "DistilBertForMaskedLM",
    "DistilBertForMultipleChoice",
    "DistilBertForQuestionAnswering",
    "DistilBertForSequenceClassification",
    "DistilBertForTokenClassification",
    "DistilBertModel",
    "ElectraForPreTraining",
    "EncoderOutput",
    "GemmChoice",
    "HEADS",
    "HeadOutput",
    "LoadReport",
    "Tokenizer",
    "WeightsError",
    "answer_questions",
    "build_model",
    "check_input_ids",
    "checked_apply",
    "configure_cpu",
    "decode_answer",
    "embed",
    "from_pretrained",
    "heads_of",
    "hf_to_params",
    "init_params",
    "load_state_dict",
    "params_to_hf",
    "read_cpu",
    "save_pretrained",
    "small_config",
]
