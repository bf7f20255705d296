"""The one error every source raises when its files are missing."""


class DatasetNotFound(FileNotFoundError):
    """No copy of the dataset was found; the message (one line) names the file expected and where."""
