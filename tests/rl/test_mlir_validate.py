"""Cost-model calibration (no IREE needed): the fit recovers a machine that generated the 'measurements'."""

import dataclasses

import jax
import numpy as np

from rl import evaluate as model_eval
from rl.cost_model import Machine
from rl.env import SchedulingEnv
from rl.mlir.evaluate import final_states
from rl.mlir.suite import validation_programs
from rl.mlir.validate import (correlations, fit_machine, log_rmse, predict, random_search_lines,
                              unscheduled_states)


def test_fit_recovers_machine_and_correlations():
    env = SchedulingEnv(validation_programs())
    states, _ = final_states(env, model_eval.random_policy, 6, jax.random.PRNGKey(0))
    base_states = unscheduled_states(env)
    truth = dataclasses.replace(Machine(), cores=2.0, scalar_ops_per_cycle=0.5, bw_dram_total=40e9)
    meas = np.array(predict(env, states, truth))
    base = np.asarray(predict(env, base_states, truth))[:, 0]
    ok = np.ones_like(meas, bool)
    ok[0, 0] = False                                            # a failed schedule is left out
    meas[0, 0] = np.nan
    pred0 = np.asarray(predict(env, states, Machine()))
    fitted = fit_machine(env, states, meas, base, ok, base_states, iters=300)
    pred1 = np.asarray(predict(env, states, fitted))
    assert log_rmse(pred1, meas, ok) < 0.5 * log_rmse(pred0, meas, ok)
    per, overall = correlations(meas, base, meas, base, ok)     # a perfect model: ρ = 1
    assert overall == 1.0 and all(np.isnan(r) or r > 0.99 for r in per)
    lines = random_search_lines(list(env.table.names), meas, base, base / 2, ks=(1, 6))
    assert "best of 6" in lines[-1] and lines[2].startswith("| IREE default | 2.00×")
