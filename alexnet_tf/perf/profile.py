"""Where a training step's time goes, from a TensorFlow profiler trace.

`train.profile_steps: [first, last]` makes training trace those global steps into
RUN_DIR/tb/train/plugins/profile/<time>/<host>.xplane.pb (TensorBoard's PROFILE tab shows it with
`pip install tensorboard-plugin-profile`). `python -m alexnet_tf profile --run-dir DIR` reads the
newest trace without that plugin and sums the time of every executed TensorFlow op by op type and
by layer and direction (the Keras layer in the op's name, towers together; the optimizer's update
is its own group).

The times are the op kernels' durations on TensorFlow's inter-op threads (an op's own intra-op
work on the Eigen pool is inside its duration), summed: with two inter-op threads the sum can
exceed the wall time of the traced steps, so the table gives shares of the summed op time.
"""

import collections
import glob
import os
import re

from alexnet_tf.run_dir import RunDirError

# Events that the executor and tf.data emit on the same threads as the ops: not ops.
_NOT_OPS = re.compile(r"^(ThreadpoolListener|ExecutorState|Iterator|Prefetch|ParallelMap|EagerExecute|TFE_)")
# A layer of the model in an op's name: "alexnet_1/conv1_0_1/convolution" -> conv1 (both towers
# together; Keras appends "_1" to the name scopes inside tf.function)
_LAYER = re.compile(r"^(conv\d|lrn\d|pool\d|fc\d|dropout\d|concat\d|flatten|pad)(?:_\d+)*$")
_OPTIMIZER = re.compile(r"^paper_sgd(?:_\d+)?$")  # Keras numbers a second optimizer in one process
_GRADIENT_ROOTS = ("gradient_tape", "gradients")  # GradientTape; tf.gradients (the towers strategy)


def latest_trace(run_dir):
    """The newest .xplane.pb under RUN_DIR/tb/train/plugins/profile/, or an error naming what to set."""
    traces = sorted(glob.glob(os.path.join(run_dir, "tb", "train", "plugins", "profile", "*", "*.xplane.pb")))
    if not traces:
        raise RunDirError(f"no profiler trace in {run_dir}/tb/train/plugins/profile: train with "
                                "--set train.profile_steps=[first,last] (e.g. [20,24]) to record one")
    return traces[-1]


def op_events(path):
    """(op name, op type, duration in seconds) for every TensorFlow op executed in the trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    events = []
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and not _NOT_OPS.match(name):
                    op_name, op_type = name.rsplit(":", 1)
                    events.append((op_name, op_type, event.duration_ps * 1e-12))
    return events


def layer_of(op_name):
    """The part of the step an op belongs to: "<layer> forward|backward" (towers together),
    "optimizer update", or "loss, metrics, other"."""
    parts = op_name.split("/")
    in_gradient_root = parts[0] in _GRADIENT_ROOTS
    # ".../lrn1_0/backward/...": the LRN layer's hand-written gradient
    backward = in_gradient_root or "backward" in parts
    parts = parts[1:] if in_gradient_root else parts
    if _OPTIMIZER.match(parts[0]):
        return "optimizer update"
    for part in parts:
        match = _LAYER.match(part)
        if match:
            return f"{match.group(1)} {'backward' if backward else 'forward'}"
    return "loss, metrics, other"


def summarize(events, top=15):
    """Markdown tables: summed op time by op type and by layer, largest first, with shares."""
    total = sum(d for _, _, d in events) or 1.0
    by_type, by_layer = collections.Counter(), collections.Counter()
    for op_name, op_type, duration in events:
        by_type[op_type] += duration
        by_layer[layer_of(op_name)] += duration
    lines = [f"{len(events)} op executions, {total:.3f} s of op time (summed over inter-op threads)", ""]
    for title, counter in (("op type", by_type), ("layer, direction", by_layer)):
        lines += [f"| {title} | ms | share |", "|---|---|---|"]
        rest = total
        for key, seconds in counter.most_common(top):
            lines.append(f"| {key} | {seconds * 1e3:.1f} | {seconds / total:.1%} |")
            rest -= seconds
        if len(counter) > top:
            lines.append(f"| ({len(counter) - top} more) | {rest * 1e3:.1f} | {rest / total:.1%} |")
        lines.append("")
    return "\n".join(lines)


def add_arguments(parser):
    """The `profile` command's arguments."""
    parser.add_argument("--run-dir", required=True, help="a run trained with train.profile_steps set (the trace is in its tb/)")
    parser.add_argument("--top", type=int, metavar="N", default=15, help="rows per table")


def main(args):
    """`python -m alexnet_tf profile`: the op-time tables of a run's latest profiler trace."""
    path = latest_trace(args.run_dir)
    print(f"trace {path}")
    print(summarize(op_events(path), top=args.top))
