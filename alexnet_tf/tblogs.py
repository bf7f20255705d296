"""The one reader of TensorBoard event files: scalars of a run's tb/<split>, across resumed runs.

Every train.py invocation writes its own event file into RUN/tb/<split>. A resumed run repeats
the steps between its checkpoint and the point where the interrupted one stopped, so the rule for
a step written more than once is: the last write wins (files in the order they were written, each
file in its own order). Values are read from tensor summaries (what Keras and tf.summary write)
or, for older writers, from `simple_value`.
"""

import os
import re

import numpy as np

from alexnet_tf.errors import UserError
from alexnet_tf.run_dir import RunDirError


class ScalarNotFound(UserError, LookupError):
    """A run directory's TensorBoard logs hold no scalar of the asked tag; the message lists those found."""


def event_files(log_dir):
    """TensorBoard event files in the order they were written (one per train.py invocation)."""
    if not os.path.isdir(log_dir):
        return []
    names = [n for n in os.listdir(log_dir) if "tfevents" in n]
    stamp = lambda n: int(re.search(r"tfevents\.(\d+)", n).group(1))
    return [os.path.join(log_dir, n) for n in sorted(names, key=lambda n: (stamp(n), n))]


def _summary_values(path):
    """(tag, step, value) of every tensor or simple_value summary in one event file, in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for event in EventFileLoader(path).Load():
        for value in event.summary.value:
            if value.WhichOneof("value") in ("tensor", "simple_value"):
                yield value.tag, int(event.step), value


def _number(value):
    from tensorboard.util import tensor_util

    return float(tensor_util.make_ndarray(value.tensor)) if value.HasField("tensor") else float(value.simple_value)


def file_scalars(path, tags):
    """{tag: [(step, value), ...]} of the scalar summaries in one event file, in file order."""
    out = {t: [] for t in tags}
    for tag, step, value in _summary_values(path):
        if tag in out:
            out[tag].append((step, _number(value)))
    return out


def last_write_wins(segments):
    """(steps, values), steps sorted, of [(step, value), ...] lists in write order: for a step that
    occurs more than once the last value written is kept (a resumed run rewrites the steps it repeats)."""
    last = {}
    for segment in segments:
        last.update(segment)
    steps = np.array(sorted(last), dtype=np.int64)
    return steps, np.array([last[s] for s in steps], dtype=np.float64)


def read_scalars(run_dir, split, tag):
    """(steps, values) of a scalar that Keras's TensorBoard callback wrote to run_dir/tb/<split>."""
    if not os.path.isdir(run_dir):
        raise RunDirError(f"{run_dir} not found; expected a run directory (train.py writes it)")
    found, segments = set(), []
    for path in event_files(os.path.join(run_dir, "tb", split)):
        segment = []
        for t, step, value in _summary_values(path):
            found.add(t)
            if t == tag:
                segment.append((step, _number(value)))
        segments.append(segment)
    if tag not in found:
        raise ScalarNotFound(f"{run_dir}: no TensorBoard scalar {tag!r} in tb/{split}; found {sorted(found)}")
    return last_write_wins(segments)
