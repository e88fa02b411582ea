import rl  # noqa: F401  (XLA CPU flags before the backend starts)
