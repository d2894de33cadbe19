"""Exception types that name what is wrong with a checkpoint."""


class CheckpointError(ValueError):
    """A checkpoint folder or file is missing, corrupt, or does not fit the model."""
