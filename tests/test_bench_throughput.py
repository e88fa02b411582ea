"""bench.throughput: its builders run as a user would (warmed up: timed calls compile nothing), and our
`answer_questions` gives the answers of `transformers` + the same decoding on one checkpoint."""

import os

from bench import throughput
from distilbert_jax.inference import pool_hidden, qa_logits


def test_qa_and_embed_builders_agree_with_transformers_and_compile_nothing_when_timed(tmp_path):
    questions, contexts = throughput.qa_pairs(30)
    assert len({len(c) for c in contexts}) > 15 and len(contexts[29]) > 2000  # varied, one long context
    qa_dir, embed_dir = os.path.join(tmp_path, "qa"), os.path.join(tmp_path, "embed")
    throughput.save_checkpoint(qa_dir, questions + contexts, "question_answering", "small")
    throughput.save_checkpoint(embed_dir, throughput._texts(30), "base", "small")
    for jitted, task, path in ((qa_logits, "qa", qa_dir), (pool_hidden, "embed", embed_dir)):
        run = getattr(throughput, f"jax_{task}")(path, 30, 8)
        compiled = jitted._cache_size()
        run()
        assert jitted._cache_size() == compiled  # every bucket was compiled by the builder
    ours = throughput.results_of("jax", "qa", qa_dir, 30, 8)
    theirs = throughput.results_of("torch", "qa", qa_dir, 30, 8)
    agreement = throughput.answer_agreement(ours, theirs)
    assert agreement["agree"] == "30/30" and agreement["max_abs_dscore"] < 1e-4
    assert all(answer is not None for answer in ours)
