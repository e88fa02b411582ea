"""A batch source that dies like a killed process, for the resume tests of every training loop."""


class Killed(Exception):
    pass


class KillAfter:
    """A batch source that dies (like a killed process) after `n` batches."""

    def __init__(self, source, n: int):
        self.source, self.n = source, n

    def __next__(self):
        if self.n == 0:
            raise Killed
        self.n -= 1
        return next(self.source)

    def state_dict(self):
        return self.source.state_dict()

    def load_state_dict(self, state):
        self.source.load_state_dict(state)
