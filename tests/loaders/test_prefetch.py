import jax
import numpy as np
import pytest

from loaders import mlm_batches, prefetch_to_device, to_device


def test_prefetch_yields_device_arrays_and_tracks_state(tok, text_ds):
    kw = dict(batch_size=4, seq_len=32, seed=0, epochs=1, process_index=0, process_count=1)
    host = list(mlm_batches(text_ds, tok, **kw))
    it = mlm_batches(text_ds, tok, **kw)
    pre = prefetch_to_device(it, size=2)
    first = next(pre)
    assert isinstance(first["input_ids"], jax.Array) and first["input_ids"].dtype == np.int32
    assert np.array_equal(np.asarray(first["labels"]), host[0]["labels"])
    assert pre.state_dict()["position"] == 1  # the consumer's position, not the prefetcher's
    rest = list(pre)
    assert len(rest) == len(host) - 1 and np.array_equal(np.asarray(rest[-1]["input_ids"]), host[-1]["input_ids"])
    pre.close()


def test_prefetch_with_sharding_and_errors():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    batch = {"x": np.arange(8, dtype=np.int32).reshape(4, 2)}
    placed = to_device(batch, sharding)
    assert placed["x"].sharding == sharding and np.array_equal(np.asarray(placed["x"]), batch["x"])

    def broken():
        yield batch
        raise RuntimeError("reader failed")

    pre = prefetch_to_device(broken(), size=1, sharding=sharding)
    assert np.array_equal(np.asarray(next(pre)["x"]), batch["x"])
    with pytest.raises(RuntimeError, match="reader failed"):
        next(pre)
