"""`python -m distilbert_jax.nas train|extract ...`."""

import sys

from ..clitools import run_cli
from .cli import main

sys.exit(run_cli(main))
