"""Data loaders: text files → token streams / padded records → resumable, sharded int32 batches → device.

    ds = TextDataset.from_files(["train.jsonl"], text_field="text")
    it = mlm_batches(ds, tok, batch_size=32, seq_len=128, mask_prob=0.15, seed=0, shuffle=True, drop_last=True)
"""
from .batching import BatchIterator, local_batch_size
from .corpus import PACKAGES, TAGS, DefaultCorpus, build_tokenizer, default_corpus, default_root
from .module_task import ModuleTask, module_task, module_task_named, search_split
from .datasets import DataError, LoadStats, TextDataset
from .mlm import IGNORE, mask_tokens
from .prefetch import DevicePrefetcher, prefetch_to_device, to_device
from .schedules import ScheduleSet, by_split, read_records, usable
from .tasks import (
    answer_token_span, classification_batches, clm_batches, mlm_batches, qa_batches, token_classification_batches,
)
from .tokenize_cache import TokenStore, tokenizer_fingerprint

__all__ = [
    "BatchIterator", "DataError", "ScheduleSet", "by_split", "read_records", "usable", "DefaultCorpus", "DevicePrefetcher", "IGNORE", "LoadStats", "ModuleTask", "module_task_named", "search_split", "PACKAGES", "TAGS",
    "TextDataset", "TokenStore", "build_tokenizer", "classification_batches", "clm_batches", "default_corpus",
    "default_root", "local_batch_size", "mask_tokens", "mlm_batches", "prefetch_to_device", "to_device",
    "token_classification_batches", "tokenizer_fingerprint", "qa_batches", "answer_token_span",
]
