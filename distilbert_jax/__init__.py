"""distilbert_jax: DistilBERT in JAX/Flax."""
from .config import DistilBertConfig, small_config
from .modeling import DistilBertModel, EncoderOutput
from .heads import (
    HEADS, HeadOutput, DistilBertForMaskedLM, DistilBertForSequenceClassification,
    DistilBertForTokenClassification, DistilBertForQuestionAnswering, DistilBertForMultipleChoice,
    build_model, init_params,
)
from .tokenizer import Batch, Tokenizer
from .weights import LoadReport, WeightsError, hf_to_params, params_to_hf
from .pretrained import from_pretrained, load_state_dict, save_pretrained
