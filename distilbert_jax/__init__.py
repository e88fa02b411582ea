"""distilbert_jax: DistilBERT in JAX/Flax."""
from .config import DistilBertConfig, small_config
from .modeling import DistilBertModel, EncoderOutput
from .heads import (
    HEADS, HeadOutput, DistilBertForMaskedLM, DistilBertForSequenceClassification,
    DistilBertForTokenClassification, DistilBertForQuestionAnswering, DistilBertForMultipleChoice,
    build_model, init_params,
)
