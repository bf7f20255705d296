"""The one error every source raises when its files are missing."""

from alexnet_tf.errors import UserError


class DatasetNotFound(UserError, FileNotFoundError):
    """No copy of the dataset was found; the message (one line) names the file expected and where."""

    prefix = ""  # the message begins with the file or dataset it names


class DatasetDamaged(DatasetNotFound):
    """A dataset file was found but cannot be read (truncated, corrupt, wrong size). A subclass of
    DatasetNotFound because the remedy and the handling are the same: a good copy of the named file."""
