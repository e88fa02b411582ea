"""`python -m distilbert_jax.nas train|extract ...`."""

import sys

from .cli import main

sys.exit(main())
