"""`python -m distilbert_jax.train TASK --config FILE`."""

import sys

from ..clitools import run_cli
from .cli import main

sys.exit(run_cli(main))
