"""SuperNet training-step time at sampled archs vs the standalone extracted model of the same arch.

    python -m bench.nas_speed [--archs 6] [--repeats 7] [--buckets 3] [--config FILE] [--out results/nas_speed]

For each of `--archs` mid-sized archs of the search space (every width in the middle half of its grid)
it times, in one process and interleaved (one SuperNet step, one standalone step, repeat), the
SuperNet's jitted train step at that arch (arch as data, shapes from its bucket) and the training
stack's jitted step of the extracted standalone model (compiled for that arch alone). Same batch,
optimizer, dropout and masked-LM loss. Prints medians, the ratio per arch and its geometric mean, and
the compilation counts (SuperNet: one per bucket seen; standalone: one per arch). Writes `<out>.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import numpy as np

from bench.common import device_description, print_table
from distilbert_jax.clitools import need_file, need_writable, run_cli
from bench.speed import _interleaved
from distilbert_jax.jsonfile import read_json_object
from distilbert_jax.nas import ArchArrays, SearchSpace, SuperNet
from distilbert_jax.nas.objectives import Objective
from distilbert_jax.nas.step import jit_supernet_step, make_supernet_step
from distilbert_jax.train import OptimConfig, Task, create_state, jit_train_step, make_optimizer, make_train_step
from distilbert_jax.train.data import SyntheticBatches
from distilbert_jax.train.parallel import data_mesh, replicate
from distilbert_jax.train.tasks import mlm_max_predictions
from distilbert_jax.train.config import DataConfig, TrainConfig

CONFIG = os.path.join(os.path.dirname(__file__), "..", "distilbert_jax", "nas", "configs", "supernet_small.json")


def mid_sized(space: SearchSpace, rng: np.random.Generator):
    """An arch whose hidden, FFN and attention widths lie in the middle half of their grids, 2+ layers."""
    def middle(values):
        n = len(values)
        return values[n // 4 : max(n // 4 + 1, math.ceil(3 * n / 4))]

    pairs = middle(space.attention_choices())
    layers = [v for v in space.layer_values if v >= 2] or list(space.layer_values)
    h, q = pairs[rng.integers(len(pairs))]
    pick = lambda vs: int(vs[rng.integers(len(vs))])  # noqa: E731
    return space.check(dict(layers=pick(layers), hidden=pick(middle(space.hidden_values)), heads=h, qkv=q,
                            ffn=pick(middle(space.ffn_values))))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nas_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", default=CONFIG, help="a NAS config (its space, model, data sizes)")
    parser.add_argument("--archs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--buckets", type=int, default=None, help="bucket edges per width (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/nas_speed")
    args = parser.parse_args(argv)
    need_file(args.config, "--config")
    need_writable(args.out, "--out")

    data = read_json_object(args.config)
    space = SearchSpace.from_dict(data["space"])
    d = DataConfig(**{k: v for k, v in data.get("data", {}).items() if k in ("batch_size", "seq_len", "mask_prob", "vocab_size")})
    from distilbert_jax.config import DistilBertConfig

    base = DistilBertConfig(vocab_size=d.vocab_size, **{k: v for k, v in data.get("model", {}).items()})
    supernet = SuperNet(space, base, args.buckets or int(data.get("buckets", 3)))
    m = mlm_max_predictions(TrainConfig(data=d))
    tx, schedule = make_optimizer(OptimConfig(learning_rate=1e-4), 10_000)
    batch = {k: jax.numpy.asarray(v) for k, v in next(SyntheticBatches("mlm", d.vocab_size, d.batch_size, d.seq_len)).items()}
    params = jax.device_get(supernet.init(args.seed))  # host copy: the steps donate their states
    mesh = data_mesh()  # states committed to the device from the start (as in training): one program per bucket
    sn_state = replicate(create_state(params, tx, 0), mesh)
    sn_step = jit_supernet_step(make_supernet_step(supernet, Objective("mlm", m), tx, schedule), sn_state)
    print(f"nas_speed on {device_description()}, batch {d.batch_size} x seq {d.seq_len}, space {space.largest()} max, "
          f"{supernet.buckets} bucket edges per width ({len(supernet.all_buckets())} buckets)", file=sys.stderr)  # fmt: skip

    rng = np.random.default_rng(args.seed)
    rows, ratios = [], []
    for _ in range(args.archs):
        arch = mid_sized(space, rng)
        bucket = supernet.bucket(arch)
        model, variables = supernet.extract(params, arch)
        st_state = replicate(create_state(variables["params"], tx, 0), mesh)
        st_step = jit_train_step(make_train_step(model, Task("mlm", max_predictions=m), tx, schedule), st_state)
        states = {"sn": sn_state, "st": st_state}
        arrays = ArchArrays.stack([arch])

        def run_sn():
            states["sn"], metrics = sn_step(states["sn"], batch, arrays, (bucket,))
            jax.block_until_ready(metrics)

        def run_st():
            states["st"], metrics = st_step(states["st"], batch)
            jax.block_until_ready(metrics)

        t0 = time.perf_counter()
        run_st()
        compile_st = time.perf_counter() - t0
        times = _interleaved({"supernet": run_sn, "standalone": run_st}, args.repeats)
        sn_state = states["sn"]
        ratio = times["supernet"] / times["standalone"]
        ratios.append(ratio)
        rows.append({"arch": str(arch), "bucket (H/Q/F)": f"{bucket.hidden}/{bucket.qkv}/{bucket.ffn}",
                     "supernet ms": f"{times['supernet']:.1f}", "standalone ms": f"{times['standalone']:.1f}",
                     "ratio": f"{ratio:.2f}", "standalone compile s": f"{compile_st:.1f}"})  # fmt: skip
    geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print_table(rows, list(rows[0]))
    n_archs = len({r["arch"] for r in rows})
    print(f"\ngeomean SuperNet/standalone step time: {geomean:.2f}x over {len(rows)} mid-sized archs (target <= 1.5x)")
    print(f"compilations: SuperNet step {sn_step._cache_size()} (bound {len(supernet.all_buckets())}) for {n_archs} "
          f"archs; standalone {n_archs} (one per arch)")  # fmt: skip
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump({"device": device_description(), "rows": rows, "geomean": geomean, "buckets": supernet.buckets,
                   "supernet_compilations": sn_step._cache_size()}, f, indent=2)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
