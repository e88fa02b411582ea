"""Measured backend: the scheduling env's programs as MLIR, compiled and timed with IREE on the host CPU.

`emit` (ops → `linalg.generic` text, seeded inputs, numpy reference), `schedule` (env actions → IREE CPU
lowering configs delivered by a tuning spec), `measure` (compile, verify the config reached codegen,
check the result, time, cache on disk). Needs the optional `mlir` extra (`iree-base-compiler`,
`iree-base-runtime`). See docs/rl.md, "Measured backend".
"""

from .emit import OpSpec, op_module, op_spec, program_specs, reference
from .measure import Measurement, ProgramMeasurement, measure_op, measure_program
from .schedule import NotRepresentable, OpSchedule, from_env_state, lowering_config, tuning_spec, unscheduled

__all__ = ["OpSpec", "op_module", "op_spec", "program_specs", "reference", "Measurement", "ProgramMeasurement",
           "measure_op", "measure_program", "NotRepresentable", "OpSchedule", "from_env_state", "lowering_config",
           "tuning_spec", "unscheduled"]
