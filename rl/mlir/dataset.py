"""A dataset of measured schedules: random schedules of every op of the program tables, compiled and timed.

    python -m rl.mlir.dataset --n 40 --out runs/sched --programs train,val,test --spaces refine,scalar

For every op of the chosen program tables (train = `rl.programs.train_programs`, val =
`rl.mlir.suite.validation_programs`, test = `rl.programs.test_programs`; a record's split is the table it came
from) and every space:
* "refine" (`rl.mlir.refine`, IREE-default-relative): IREE's default (keep), data tiling where IREE takes it
  (matmul-like ops), then `--n` distinct uniformly random legal episodes (`refine.random_refinement`);
* "scalar" (`rl.mlir.schedule`, the env's tiles / interchange / parallel / vectorize): IREE's default, then
  `--n` distinct schedules of the env's uniformly random legal episodes (`rl.evaluate.random_policy`), each
  op measured on its own (a fused op's own schedule is measured unfused); runs whose first call passes
  `--deadline` seconds are stopped (status "timeout", `lower_bound_s` = the deadline).
Each is compiled with IREE for the host CPU, its config read back from the dump, its result checked against
numpy and timed (`--timing cpu`: one thread's CPU time, the minimum of `--repeats` runs — robust on a shared
machine). Records go to `<out>/records.jsonl`, one JSON object per line, in the schema of
docs/rl.md ("Dataset of measured schedules": `id`, `program`, `split`, `op_index`, `op_name`, `op_type`, `op`, `space`, `schedule`,
`config`, `default_config`, `is_default`, `cpu`, `timing`, `repeats`, `time_s`, `status`, `message`,
`measured_at`, `seconds`), and `<out>/manifest.json` names the CPU, versions, every run's arguments and the
counts. A failed schedule is a record with its status (compile_error, verify_error, wrong_result, timeout,
not_representable, error), never a crash.

The file is append-only and resumable: a rerun with the same arguments skips every id already written (ids
hash program, op, space, schedule and repeats) and truncates a partial last line left by a crash. Work is
ordered so that an interrupted run covers every program: per space, round 0 is every op's default, round 1
every op's data tiling, round i + 2 every op's i-th random schedule — ops interleaved across the splits.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from distilbert_jax.clitools import InputError, need_writable, run_cli

from loaders.schedules import RECORDS_FILE as RECORDS, SPLITS, read_records

from ..programs import OP_TYPES, ProgramTable, test_programs, train_programs
from . import refine as R
from .emit import OpSpec, program_specs
from .schedule import NotRepresentable, OpSchedule

log = logging.getLogger("rl.mlir")
SPACES = ("refine", "scalar")
MANIFEST = "manifest.json"
STATUS = {"ok": "ok", "slow": "timeout", "rejected": "compile_error", "unverified": "verify_error",
          "wrong": "wrong_result"}
SCALAR_EPISODES = 4          # scalar space: random episodes drawn per wanted schedule (distinct ones are kept)
CPU_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "sse", "ssse", "bmi")


def split_table(split: str) -> ProgramTable:
    """The program table of a split name (train / val / test)."""
    from .suite import validation_programs

    tables = {"train": train_programs, "val": validation_programs, "test": test_programs}
    if split not in tables:
        raise InputError(f"--programs: unknown split {split!r}; expected a comma list of {', '.join(SPLITS)}")
    return tables[split]()


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """What one `rl.mlir.dataset` run measures."""

    out: str
    n: int = 40
    splits: tuple[str, ...] = SPLITS
    spaces: tuple[str, ...] = SPACES
    programs: tuple[str, ...] = ()           # only these program names (empty: all of the splits)
    workers: int = 2
    repeats: int = 3
    seed: int = 0
    timing: str = "cpu"
    deadline_s: float = 1.0                  # scalar space: a first run longer than this is stopped ("timeout")
    remeasure: str = ""                      # a records file: measure its ok records' schedules again (not `plan`)


@dataclasses.dataclass(frozen=True)
class OpRef:
    """One op of one program of one split, with what a record says about it."""

    split: str
    program: str
    op_index: int
    spec: OpSpec
    op: dict                                 # the record's "op" field


@dataclasses.dataclass(frozen=True)
class Job:
    """One (op, space, schedule) measurement; `schedule` is a `Refinement` (refine), an `OpSchedule` or None
    (scalar; None = IREE's default)."""

    ref: OpRef
    space: str
    schedule: Any
    is_default: bool

    @property
    def key(self) -> str:
        if self.space == "refine":
            return self.schedule.key()
        return "iree-default" if self.schedule is None else self.schedule.key()

    def record_id(self, repeats: int, timing: str) -> str:
        parts = [self.ref.program, str(self.ref.op_index), self.space, self.key, str(repeats)]
        return hashlib.sha1("|".join(parts + ([] if timing == "cpu" else [timing])).encode()).hexdigest()

    def schedule_fields(self) -> dict:
        if self.space == "refine":
            return dataclasses.asdict(self.schedule)
        if self.schedule is None:
            return {"mode": "keep"}
        return {"mode": "schedule", **dataclasses.asdict(self.schedule)}


def op_fields(table: ProgramTable, p: int, k: int, spec: OpSpec) -> dict:
    """The record's "op": the emitted op (`OpSpec`) and the env's loop-nest row (`rl.programs.Op` fields)."""
    row = {f: np.asarray(getattr(table, f)[p, k]).tolist() for f in table._fields if f not in ("names", "op_valid")}
    return {"op_type": OP_TYPES[int(table.op_type[p, k])], "name": spec.name, **dataclasses.asdict(spec),
            "collapse_groups": [list(g) for g in spec.collapse_groups()], "flops": spec.flops, "table": row}


def collect_ops(splits: tuple[str, ...], names: tuple[str, ...] = ()) -> tuple[list[OpRef], dict]:
    """Every op of the splits' programs (only `names` if given), programs interleaved across splits (train
    0, val 0, test 0, train 1, …), and the tables {split: ProgramTable}."""
    tables = {s: split_table(s) for s in splits}
    known = {n for t in tables.values() for n in t.names}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"--program: unknown program(s) {unknown} in splits {', '.join(splits)}")
    per_split = {s: [p for p, n in enumerate(t.names) if not names or n in names] for s, t in tables.items()}
    ops = []
    for i in range(max(map(len, per_split.values()))):
        for s, t in tables.items():
            if i < len(per_split[s]):
                p = per_split[s][i]
                ops += [OpRef(s, t.names[p], k, spec, op_fields(t, p, k, spec))
                        for k, spec in enumerate(program_specs(t, p))]
    return ops, tables


def scalar_schedules(table: ProgramTable, n: int, seed: int) -> dict[tuple[int, int], list[OpSchedule]]:
    """{(program, op): up to `n` distinct schedules} from `SCALAR_EPISODES · n` uniformly random legal env
    episodes per program (one jitted batch per table; fused schedules measured unfused)."""
    import jax

    from .. import evaluate as model_eval
    from ..env import SchedulingEnv
    from .evaluate import final_states, state_at
    from .schedule import from_env_state

    env = SchedulingEnv(table)
    states, _ = final_states(env, model_eval.random_policy, max(SCALAR_EPISODES * n, 1), jax.random.PRNGKey(seed))
    out: dict[tuple[int, int], dict[str, OpSchedule]] = {}
    for p in range(env.n_programs):
        for i in range(np.asarray(states.prog).shape[1]):
            for k, sc in enumerate(from_env_state(table, state_at(states, p, i))):
                sc = dataclasses.replace(sc, fused=False)
                got = out.setdefault((p, k), {})
                if len(got) < n:
                    got.setdefault(sc.key(), sc)
    return {pk: list(v.values()) for pk, v in out.items()}


def _op_rng(seed: int, ref: OpRef, space: str) -> np.random.Generator:
    h = int.from_bytes(hashlib.sha1(f"{ref.program}|{ref.op_index}|{space}".encode()).digest()[:8], "little")
    return np.random.default_rng([seed, h])


def plan(cfg: DatasetConfig, ops: list[OpRef], tables: dict, defaults: list) -> list[Job]:
    """Every job in the order measured: per space, defaults of all ops, then data tiling, then the i-th random
    schedule of every op for i = 0, 1, … (so an interrupted run covers every program)."""
    jobs: list[Job] = []
    for space in cfg.spaces:
        rounds: list[list[Job]] = [[], []]
        if space == "refine":
            for ref, d in zip(ops, defaults):
                rounds[0].append(Job(ref, space, R.Refinement("keep"), True))
                if d is None:
                    continue
                if d.data_tiling:
                    rounds[1].append(Job(ref, space, R.Refinement("data-tiling"), False))
                for i, r in enumerate(R.random_configs(d, cfg.n, _op_rng(cfg.seed, ref, space))):
                    while len(rounds) <= i + 2:
                        rounds.append([])
                    rounds[i + 2].append(Job(ref, space, r, False))
        else:
            drawn = {s: scalar_schedules(t, cfg.n, cfg.seed) for s, t in tables.items()} if cfg.n else {}
            for ref in ops:
                rounds[0].append(Job(ref, space, None, True))
                p = tables[ref.split].names.index(ref.program)
                for i, sc in enumerate(drawn.get(ref.split, {}).get((p, ref.op_index), [])):
                    while len(rounds) <= i + 2:
                        rounds.append([])
                    rounds[i + 2].append(Job(ref, space, sc, False))
        jobs += [j for rnd in rounds for j in rnd]
    return jobs


def remeasure_jobs(path: str, cfg: DatasetConfig, ops: list[OpRef]) -> list[Job]:
    """The jobs of `path`'s "ok" records of `cfg`'s splits / spaces / programs, in file order: the same (op,
    schedule) measured again — a second, independent measurement of the same schedules (same record ids, so
    the two files pair up by id). Refine space only (the scalar space's timeouts make a pairing uneven)."""
    if cfg.spaces != ("refine",):
        raise InputError("--remeasure: only --spaces refine can be measured again")
    from ..costnet.features import refinement_from

    refs = {(o.program, o.op_index): o for o in ops}
    jobs, missing = [], set()
    for r in read_records(path):
        if r["status"] != "ok" or r["space"] != "refine" or r["split"] not in cfg.splits:
            continue
        ref = refs.get((r["program"], int(r["op_index"])))
        if ref is None:
            if not cfg.programs or r["program"] in cfg.programs:
                missing.add(r["program"])
            continue
        job = Job(ref, "refine", refinement_from(r["schedule"]), bool(r.get("is_default")))
        if r.get("id") and job.record_id(cfg.repeats, cfg.timing) != r["id"]:
            raise InputError(f"--remeasure: {path}: record {r['id']} ({r['program']} op {r['op_index']}) was measured "
                             f"with other settings (--repeats {r.get('repeats')}, --timing {r.get('timing')}?)")
        jobs.append(job)
    if missing:
        raise InputError(f"--remeasure: {path} has records of program(s) {sorted(missing)} that the program tables "
                         "no longer hold")
    return list({j.record_id(cfg.repeats, cfg.timing): j for j in jobs}.values())


def cpu_fields() -> tuple[dict, str]:
    """The record's "cpu" (model name, SIMD-related ISA flags, logical cores) and a one-line description."""
    from distilbert_jax.cpu import read_cpu

    c = read_cpu()
    flags = sorted(f for f in c.flags if f.startswith(CPU_FLAG_PREFIXES))
    return {"model": c.model, "flags": flags, "cores": c.cores}, c.describe()


def measure_job(job: Job, d: R.DefaultConfig | None, cfg: DatasetConfig) -> dict:
    """Measure one job → the record's measured fields (status, time, config, message, …); never raises."""
    from .measure import measure_op, sources

    t0 = time.perf_counter()
    try:
        if job.space == "refine":
            m = R.measure_refinement(job.ref.spec, d, job.schedule, cfg.repeats, use_cache=False, timing=cfg.timing)
        else:
            if job.schedule is not None:
                sources(job.ref.spec, job.schedule)          # raises NotRepresentable before any compile
            m = measure_op(job.ref.spec, job.schedule, cfg.repeats, use_cache=False,
                           deadline_s=None if job.schedule is None else cfg.deadline_s, timing=cfg.timing)
        status = STATUS.get(m.status, m.status)
        rec = {"time_s": float(m.time_s) if m.ok else None, "status": status, "message": m.error[:500],
               "config": m.config, "times": [float(t) for t in m.times], "spread": _num(m.spread),
               "compile_s": _num(m.compile_s), "max_abs_err": _num(m.max_abs_err)}
        if m.status == "slow":
            rec["lower_bound_s"] = float(m.lower_bound_s)
    except NotRepresentable as e:
        rec = {"time_s": None, "status": "not_representable", "message": str(e)[:500], "config": None}
    except Exception as e:  # noqa: BLE001  (a failed measurement is a record, never a crash)
        rec = {"time_s": None, "status": "error", "message": f"{type(e).__name__}: {e}"[:500], "config": None}
    rec["seconds"] = round(time.perf_counter() - t0, 4)
    rec["measured_at"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return rec


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def make_record(job: Job, d: R.DefaultConfig | None, cfg: DatasetConfig, cpu: dict, measured: dict) -> dict:
    """The full schema record of a measured job."""
    ref = job.ref
    return {"id": job.record_id(cfg.repeats, cfg.timing), "program": ref.program, "split": ref.split,
            "op_index": ref.op_index, "op_name": ref.spec.name, "op_type": ref.op["op_type"], "op": ref.op,
            "space": job.space, "schedule": job.schedule_fields(), "schedule_key": job.key,
            "default_config": None if d is None else dataclasses.asdict(d), "is_default": job.is_default,
            "cpu": cpu, "timing": cfg.timing, "repeats": cfg.repeats, **measured}


# ---- the append-only file --------------------------------------------------------------------------------
def existing_records(path: str) -> list[dict]:
    """The records already in `path` (none when it does not exist yet or is empty)."""
    return read_records(path) if os.path.exists(path) and os.path.getsize(path) else []


def truncate_partial_line(path: str) -> int:
    """Cut a partial last line (no trailing newline) off `path`; returns the bytes removed."""
    if not os.path.exists(path):
        return 0
    size = os.path.getsize(path)
    with open(path, "rb+") as f:
        pos = size
        while pos > 0:
            step = min(pos, 1 << 16)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        if pos < size:
            f.truncate(pos)
    return size - pos


class RecordWriter:
    """Appends records to records.jsonl, one `os.write` of a whole line each (a crash loses at most it)."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, rec: dict) -> None:
        os.write(self.fd, (json.dumps(rec, separators=(",", ":")) + "\n").encode())

    def close(self) -> None:
        os.close(self.fd)


# ---- the run ---------------------------------------------------------------------------------------------
def _defaults(ops: list[OpRef], workers: int) -> list[R.DefaultConfig | None]:
    """IREE's default config of every op (disk-cached; None where IREE failed on the op)."""
    from tqdm import tqdm

    def one(ref):
        try:
            return R.default_config(ref.spec)
        except Exception as e:  # noqa: BLE001
            log.warning("no default config for %s op %d: %s", ref.program, ref.op_index, str(e)[:200])
            return None

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(one, ops), total=len(ops), desc="IREE default configs", unit="op",
                         file=sys.stdout))


def versions() -> dict:
    """Versions of what the measurements depend on."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("iree-base-compiler", "iree-base-runtime", "numpy", "jax"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def counts(records: list[dict]) -> dict[str, int]:
    """{"split/space/status": records}."""
    return dict(sorted(Counter(f"{r.get('split')}/{r.get('space')}/{r.get('status')}" for r in records).items()))


def summary_table(records: list[dict], measured: int, seconds: float) -> str:
    from distilbert_jax.tables import markdown_table

    c = Counter((r.get("split"), r.get("space"), r.get("status")) for r in records)
    rows = [{"split": s, "space": sp, "status": st, "records": v} for (s, sp, st), v in sorted(c.items(), key=str)]
    rate = measured / seconds * 3600 if seconds > 0 else float("nan")
    return (markdown_table(rows, ["split", "space", "status", "records"])
            + f"\n{len(records)} records in all; this run measured {measured} in {seconds:.0f} s "
              f"= {rate:.0f} records per hour\n")


def run(cfg: DatasetConfig, progress: bool = True) -> dict:
    """Measure every job of `cfg` not yet in `<out>/records.jsonl` (see the module docstring) → the manifest."""
    from tqdm import tqdm

    from distilbert_jax.atomicfile import write_json

    ops, tables = collect_ops(cfg.splits, cfg.programs)
    os.makedirs(cfg.out, exist_ok=True)
    path, man_path = os.path.join(cfg.out, RECORDS), os.path.join(cfg.out, MANIFEST)
    cut = truncate_partial_line(path)
    if cut:
        print(f"resume: removed a partial last line ({cut} bytes) of {path}")
    done = {r["id"] for r in existing_records(path)}
    defaults = _defaults(ops, cfg.workers)
    dmap = {(o.program, o.op_index): d for o, d in zip(ops, defaults)}
    todo = remeasure_jobs(cfg.remeasure, cfg, ops) if cfg.remeasure else plan(cfg, ops, tables, defaults)
    jobs = [j for j in todo if j.record_id(cfg.repeats, cfg.timing) not in done]
    cpu, cpu_line = cpu_fields()
    manifest = _read_manifest(man_path)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    this = {"args": dataclasses.asdict(cfg), "started": started, "skipped_existing": len(done), "planned": len(jobs),
            "pid": os.getpid()}
    manifest.update({"cpu": cpu, "cpu_description": cpu_line, "versions": versions(), "schema": "records.jsonl: "
                     "one JSON record per line (see rl/mlir/dataset.py)"})
    manifest.setdefault("runs", []).append(this)
    write_json(man_path, manifest, indent=1)
    print(f"{len(ops)} ops of {len({o.program for o in ops})} programs; {len(done)} records already in {path}, "
          f"{len(jobs)} to measure with {cfg.workers} workers")
    writer, measured, t0 = RecordWriter(path), 0, time.time()
    bar = tqdm(total=len(jobs), desc="measuring", unit="rec", disable=not progress, file=sys.stdout)
    interrupted = False
    old = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    pool = concurrent.futures.ThreadPoolExecutor(cfg.workers)
    futures = {pool.submit(measure_job, j, dmap[(j.ref.program, j.ref.op_index)], cfg): j for j in jobs}
    written = set()
    try:
        for fut in concurrent.futures.as_completed(futures):
            j = futures[fut]
            writer.write(make_record(j, dmap[(j.ref.program, j.ref.op_index)], cfg, cpu, fut.result()))
            written.add(fut)
            measured += 1
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: finishing the measurements under way, then stopping", flush=True)
        pool.shutdown(wait=True, cancel_futures=True)
        for fut, j in futures.items():
            if fut not in written and fut.done() and not fut.cancelled():
                writer.write(make_record(j, dmap[(j.ref.program, j.ref.op_index)], cfg, cpu, fut.result()))
                measured += 1
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
        bar.close()
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    seconds = time.time() - t0
    records = existing_records(path)
    this.update({"finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "measured": measured, "seconds": round(seconds, 1), "interrupted": interrupted,
                 "records_per_hour": round(measured / seconds * 3600, 1) if seconds > 0 else None})
    manifest.update({"total": len(records), "counts": counts(records)})
    write_json(man_path, manifest, indent=1)
    print("\n" + summary_table(records, measured, seconds))
    print(f"measured on {manifest['cpu_description']} (timing {cfg.timing!r}, repeats {cfg.repeats})")
    return manifest


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _read_manifest(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        log.warning("manifest %s unreadable: starting a new one", path)
        return {}


def _csv(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if not items or bad:
        raise InputError(f"{what}: {'unknown ' + repr(bad) if bad else 'nothing given'}; expected a comma list "
                         f"of {', '.join(allowed)}")
    return tuple(dict.fromkeys(items))


def main(argv: list[str] | None = None) -> int | None:
    ap = argparse.ArgumentParser(prog="python -m rl.mlir.dataset", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True, help="random schedules per op per space (besides the defaults)")
    ap.add_argument("--out", required=True, help="directory of records.jsonl and manifest.json (resumed if present)")
    ap.add_argument("--programs", default="train,val", help="splits: comma list of train, val, test (default train,val)")
    ap.add_argument("--program", action="append", default=[], help="only this program (repeatable)")
    ap.add_argument("--spaces", default="refine,scalar", help="comma list of refine, scalar (in this order)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="measurements at once (threads)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timing", choices=("cpu", "wall"), default="cpu", help="see rl.mlir.timer.TIMINGS")
    ap.add_argument("--deadline", type=float, default=1.0,
                    help="scalar space: stop a schedule whose first run takes longer (seconds; status timeout)")
    ap.add_argument("--remeasure", default="", metavar="RECORDS",
                    help="measure the ok refine records of this records file (or directory) again instead of drawing "
                         "schedules (--n is ignored): a second measurement of the same schedules, same ids")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    for name in ("n", "workers", "repeats"):
        if getattr(args, name) < (0 if name == "n" else 1):
            raise InputError(f"--{name} must be ≥ {0 if name == 'n' else 1}, got {getattr(args, name)}")
    if not args.deadline > 0:
        raise InputError(f"--deadline must be > 0 seconds, got {args.deadline}")
    need_writable(args.out, "--out")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise InputError(f"--out {args.out} is a file, expected a directory")
    cfg = DatasetConfig(args.out, args.n, _csv(args.programs, SPLITS, "--programs"),
                        _csv(args.spaces, SPACES, "--spaces"), tuple(args.program), args.workers, args.repeats,
                        args.seed, args.timing, args.deadline, args.remeasure)
    try:
        import iree.compiler  # noqa: F401
    except ImportError:
        raise InputError("the measured backend needs IREE: pip install -e '.[mlir]'") from None
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    manifest = run(cfg, progress=not args.quiet)
    return 130 if manifest["runs"][-1].get("interrupted") else None


if __name__ == "__main__":
    sys.exit(run_cli(main))
