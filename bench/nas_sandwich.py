"""Does the sandwich rule help? Two SuperNets trained with the same config, seed and number of steps —
one arch per step vs the sandwich rule (largest + smallest + one random arch per step) — then the
held-out masked-LM loss of the same extracted sub-networks of each (standalone models, evaluated on the
corpus's validation split).

    python -m bench.nas_sandwich [--steps 150] [--archs 8] [--config FILE] [--out results/nas_sandwich]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import device_description, print_table
from distilbert_jax.clitools import need_file, need_writable, run_cli
from distilbert_jax.nas.config import load_nas_config
from distilbert_jax.nas.train import train_supernet
from distilbert_jax.train.sources import make_sources
from distilbert_jax.train.losses import labelled_ce_sums

CONFIG = os.path.join(os.path.dirname(__file__), "..", "distilbert_jax", "nas", "configs", "supernet_small.json")


def held_out_loss(model, variables, batches) -> float:
    """Masked-LM cross-entropy of a standalone model over `batches` (all masked tokens)."""
    logits_fn = jax.jit(lambda v, ids, mask: model.apply(v, ids, mask).logits)
    ce = count = 0.0
    for b in batches:
        sums = labelled_ce_sums(logits_fn(variables, jnp.asarray(b["input_ids"]), jnp.asarray(b["attention_mask"])),
                                jnp.asarray(b["labels"]))  # fmt: skip
        ce += float(sums["ce"])
        count += float(np.sum(b["labels"] != -100))
    return ce / max(count, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nas_sandwich", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--archs", type=int, default=8)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--out", default="results/nas_sandwich")
    args = parser.parse_args(argv)
    need_file(args.config, "--config")
    need_writable(args.out, "--out")

    results = {}
    for sandwich in (False, True):
        out_dir = f"{args.out}_{'sandwich' if sandwich else 'plain'}"
        settings, cfg = load_nas_config(args.config, [f"total_steps={args.steps}", f"out_dir={json.dumps(out_dir)}",
                                                      f"sandwich={json.dumps(sandwich)}", "random_archs=1", "resume=false",
                                                      "eval_every=0", "checkpoint_every=0"])  # fmt: skip
        results[sandwich] = (settings, cfg, train_supernet(settings, cfg))
    settings, cfg, _ = results[False]
    space = settings.space
    rng = np.random.default_rng(1234)
    archs = list(dict.fromkeys([space.smallest(), space.largest()] + [space.sample(rng) for _ in range(4 * args.archs)]))[: args.archs]
    eval_batches = list(itertools.islice(make_sources(cfg).make_eval(), args.eval_batches))
    rows, deltas = [], []
    for arch in archs:
        row = {"arch": str(arch)}
        losses = {}
        for sandwich, (_, _, result) in results.items():
            model, variables = result.supernet.extract(jax.device_get(result.state.params), arch)
            losses[sandwich] = held_out_loss(model, variables, eval_batches)
        row.update({"plain loss": f"{losses[False]:.4f}", "sandwich loss": f"{losses[True]:.4f}",
                    "sandwich - plain": f"{losses[True] - losses[False]:+.4f}"})  # fmt: skip
        deltas.append(losses[True] - losses[False])
        rows.append(row)
    print(f"\nnas_sandwich on {device_description()}: {args.steps} steps each, held-out MLM loss of {len(archs)} "
          "extracted sub-networks", file=sys.stderr)  # fmt: skip
    print_table(rows, list(rows[0]))
    better = sum(d < 0 for d in deltas)
    print(f"\nsandwich better on {better}/{len(deltas)} archs; mean difference {statistics.mean(deltas):+.4f} "
          f"(negative: the sandwich rule helps)")  # fmt: skip
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump({"device": device_description(), "steps": args.steps, "rows": rows, "mean_delta": statistics.mean(deltas)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
