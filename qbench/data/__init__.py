"""Data sources: built-in generators and readers of real datasets."""


class DataError(ValueError):
    """Input data that cannot be used; the message says which file, which line and why."""
