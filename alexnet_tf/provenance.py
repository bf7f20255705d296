"""What produced an output: the library versions and the package's git commit, for the records that
commands write next to their results (`prepare.json`)."""

import os
import platform
import subprocess


def git_commit():
    """The package checkout's commit ("<sha>-dirty" with uncommitted changes to tracked files), or None
    when the package is not in a git checkout or git is not installed."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def versions():
    """{"python", "tensorflow", "keras", "tensorflow_datasets", "numpy", "alexnet_tf", "git_commit"}."""
    import keras
    import numpy as np
    import tensorflow as tf

    import alexnet_tf

    try:
        import tensorflow_datasets as tfds
        tfds_version = tfds.__version__
    except ImportError:
        tfds_version = None
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "tensorflow_datasets": tfds_version, "numpy": np.__version__, "alexnet_tf": alexnet_tf.__version__,
            "git_commit": git_commit()}
