"""`python -m distilbert_jax.train TASK --config FILE`."""

import sys

from .cli import main

sys.exit(main())
