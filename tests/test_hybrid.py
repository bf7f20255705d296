"""distribute.strategy = hybrid (conv layers data parallel, fc6-fc8 model parallel) on 2 logical CPUs.

References: one-device training (`default`) of the same tiny model on the same global batches (dropout off,
train.deterministic, 8 steps = 2 epochs of 4, mid-epoch checkpoints every 3 steps, as
tests/test_distribute.py); TensorFlow's own device placement log; an uninterrupted hybrid run for the
kill -9 resume; and default's saved model.keras and SavedModel for the structure.
"""

import json
import os
import re
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
import alexnet_tf.optim  # noqa: F401  (registers the custom classes for load_model)
from alexnet_tf import hybrid
from alexnet_tf.config import dump
from conftest import ROOT, tiny_overrides
from test_distribute import ATOL, OVERRIDES, max_difference, run_python

HYBRID = ["distribute.strategy=hybrid", "distribute.logical_cpus=2"]
EXPORT = ["train.export=true"]


def final_weights(run_dir):
    return keras.saving.load_model(os.path.join(run_dir, "model.keras")).get_weights()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One-device training with the export on, in this process: its run directory."""
    from alexnet_tf.training import train
    run_dir = str(tmp_path_factory.mktemp("default"))
    train(alexnet_tf.load_config(None, OVERRIDES + EXPORT), run_dir, verbose=0)
    return run_dir


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory):
    """The same run under hybrid in a fresh process (the CPU split), logging every op's device: (stdout, run dir)."""
    run_dir = str(tmp_path_factory.mktemp("hybrid"))
    out = run_python(f"""
    import alexnet_tf, tensorflow as tf
    from alexnet_tf import distribute
    from alexnet_tf.training import train
    distribute.split_cpu(2)
    tf.debugging.set_log_device_placement(True)  # before the runtime starts: logs every op of every function
    train(alexnet_tf.load_config(None, {OVERRIDES + EXPORT + HYBRID!r}), {run_dir!r}, verbose=0)
    """)
    return out, run_dir


def test_blocks_cover_every_item_once():
    for n, parts in [(128, 2), (128, 8), (1000, 8), (10, 4), (3, 4)]:
        spans = hybrid.blocks(n, parts)
        assert len(spans) == parts and spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert max(h - lo for lo, h in spans) - min(h - lo for lo, h in spans) <= 1
    assert hybrid.blocks(4096, 2) == [(0, 2048), (2048, 4096)]  # D = 2: the towers' halves of fc6 and fc7


@pytest.mark.slow
def test_hybrid_matches_default_after_8_steps(default_run, hybrid_run):
    out, run_dir = hybrid_run
    assert "strategy: hybrid (arXiv 1404.5997)" in out and "['/device:CPU:0', '/device:CPU:1']" in out
    assert max_difference(final_weights(run_dir), final_weights(default_run)) < ATOL
    metrics = json.loads(open(os.path.join(run_dir, "metrics.json")).read())
    assert metrics["strategy"] == "hybrid" and metrics["epochs_completed"] == 2


# tests/test_distribute.py's placement log lines: "<op name>: (<op type>): /job:.../device:CPU:<d>"
_PLACED = re.compile(r"^(\S+): \((\w+)\): /job:localhost/replica:0/task:0/device:CPU:(\d)$")
# hybrid.py's name scopes: conv_slice<d> (the feature layers on batch block d), fc<i>_slice<d> (column block d
# of fc<i>, with its all-gather), and their gradients (gradients/<forward op name>_grad/...)
_BLOCK = re.compile(r"(?:^|/)(conv|fc6|fc7|fc8)_slice(\d)/")
# ops TensorFlow puts where their variable lives, whatever the scope (the conv weights are read by every
# device; the dropout seed generators' state lives on device 0)
_ON_THE_VARIABLE = ("ReadVariableOp", "AssignVariableOp", "AssignAddVariableOp", "VarHandleOp")


@pytest.mark.slow
def test_placement_log_shows_every_block_on_its_device(hybrid_run):
    placed = [m.groups() for m in map(_PLACED.match, hybrid_run[0].splitlines()) if m]
    misplaced, count = [], {}
    for name, op_type, device in placed:
        block = _BLOCK.search(name)
        if block is None or op_type in _ON_THE_VARIABLE or op_type in ("_Arg", "_Retval", "NoOp"):
            continue
        layer, d = block.group(1), int(block.group(2))
        key = (layer, d, "backward" if name.startswith("gradients/") else "forward", op_type)
        count[key] = count.get(key, 0) + 1
        if int(device) != d:
            misplaced.append((name, op_type, device))
    assert not misplaced, misplaced[:20]
    # not vacuous: each device ran its batch block's convolutions forward and backward ...
    for d in (0, 1):
        assert count.get(("conv", d, "forward", "Conv2D"), 0) >= 10, count  # 5 conv layers x 2 towers (+ validation)
        for kind in ("Conv2DBackpropFilter", "Conv2DBackpropInput", "ReluGrad"):
            assert count.get(("conv", d, "backward", kind), 0) >= 8, (d, kind, count)
        # ... and its column block of every fc layer for the whole batch, after gathering the whole input
        for layer in ("fc6", "fc7", "fc8"):
            assert count.get((layer, d, "forward", "MatMul"), 0) >= 1 and count.get((layer, d, "forward", "ConcatV2"), 0) >= 1
            assert count.get((layer, d, "backward", "MatMul"), 0) >= 2, (layer, d)  # d input and d kernel
            assert count.get((layer, d, "backward", "BiasAddGrad"), 0) == 1, (layer, d)
    # with D = 2, device t's columns of fc6 and fc7 are tower t's layers, whose weights live on device t
    reads = {(n.split("/")[0], d) for n, t, d in placed if t == "ReadVariableOp" and re.match(r"fc[67]_weights\d/", n)}
    assert reads == {("fc6_weights0", "0"), ("fc6_weights1", "1"), ("fc7_weights0", "0"), ("fc7_weights1", "1")}, reads
    # the paper's update of every variable runs on its device: both devices update
    assert {d for n, t, d in placed if n.startswith("paper_sgd/") and t.startswith("Assign")} == {"0", "1"}


@pytest.mark.slow
def test_saved_model_files_have_default_structure(default_run, hybrid_run):
    _, run_dir = hybrid_run
    saved = [keras.saving.load_model(os.path.join(r, "model.keras")) for r in (default_run, run_dir)]
    assert saved[0].get_config() == saved[1].get_config()  # the layers, their names, shapes and connections
    optimizers = [{k: v for k, v in m.optimizer.get_config().items() if k != "name"} for m in saved]  # name: a counter
    assert type(saved[0].optimizer) is type(saved[1].optimizer) and optimizers[0] == optimizers[1]
    assert [(w.path, w.shape) for w in saved[0].weights] == [(w.path, w.shape) for w in saved[1].weights]
    exports = [saved_model(os.path.join(r, "export", "1")) for r in (default_run, run_dir)]
    # the same named variables (name, shape, dtype; their order in the file follows the tracing) and the same
    # signatures, input and output tensors included
    variables = [sorted((n.variable.name, tuple(d.size for d in n.variable.shape.dim), n.variable.dtype)
                        for n in e.object_graph_def.nodes if n.WhichOneof("kind") == "variable") for e in exports]
    assert variables[0] == variables[1] and len(variables[0]) > 16
    assert dict(exports[0].signature_def) == dict(exports[1].signature_def)
    assert {"serving_default", "pixels", "ten_crop"} <= set(exports[0].signature_def)


def saved_model(directory):
    """The MetaGraphDef of a SavedModel directory."""
    from tensorflow.core.protobuf import saved_model_pb2
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(directory, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return proto.meta_graphs[0]


# === Exact resume after kill -9 (tests/test_resume.py's method) ===

RESUME = tiny_overrides(**{"train.deterministic": True, "train.epochs": 3, "train.checkpoint_every": 3}) + HYBRID


def train_py(config_file, run_dir, *driver_args):
    """train.py (through tests/crash_driver.py) in its own process: the CPU split needs a fresh TensorFlow."""
    command = [sys.executable, os.path.join(ROOT, "tests", "crash_driver.py"), *driver_args, "--",
               "--config", str(config_file), "--run-dir", str(run_dir)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)


def checkpoint_values(prefix):
    """Every saved tensor of a checkpoint except the iterator state (a variant) and the wall clock."""
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    return {k: reader.get_tensor(k) for k in dtypes
            if dtypes[k] != tf.variant and k != "_CHECKPOINTABLE_OBJECT_GRAPH" and not k.startswith("wall_seconds")}


@pytest.mark.slow
def test_killed_hybrid_run_resumes_bit_identical(tmp_path):
    """Dropout on (its seed state must come back too). Killed inside its second recovery checkpoint write
    (global step 4: files written, pointer not), then right after global step 7; the third run finishes."""
    config_file = tmp_path / "config.yaml"
    dump(alexnet_tf.load_config(None, RESUME), str(config_file))
    done = train_py(config_file, tmp_path / "reference")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    resumed = tmp_path / "resumed"
    killed = train_py(config_file, resumed, "--kill-in-save", "2")
    assert killed.returncode == -signal.SIGKILL and "(files written, pointer not)" in killed.stdout, killed.stderr[-2000:]
    killed = train_py(config_file, resumed, "--kill-at-step", "7")
    assert killed.returncode == -signal.SIGKILL and "ckpt-3" in killed.stdout.split("resuming from")[1].splitlines()[0]
    last = train_py(config_file, resumed)
    assert last.returncode == 0 and "ckpt-6" in last.stdout.split("resuming from")[1].splitlines()[0], last.stderr[-2000:]
    a, b = final_weights(str(tmp_path / "reference")), final_weights(str(resumed))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    prefixes = [tf.train.latest_checkpoint(str(r / "checkpoints" / "last")) for r in (tmp_path / "reference", resumed)]
    assert all(p.endswith("ckpt-12") for p in prefixes), prefixes
    values = [checkpoint_values(p) for p in prefixes]
    assert values[0].keys() == values[1].keys() and any("dropout_seeds" in k for k in values[0])
    assert not [k for k in values[0] if not np.array_equal(values[0][k], values[1][k])]


# === Bytes between devices: perf/traffic.py's arithmetic against the running step ===

# One training step of the tiny model (batch 16, fixed shape) on 2 logical CPUs with run metadata on: the step's
# partition graphs, one per device, hold a _Send for every tensor that goes to another device, and the
# all-reduce's CollectiveReduceV2 ops; each tensor's shape is read from the traced step's graph. (oneDNN's
# graph rewrite fuses a bias gradient into Conv2DBackpropFilter as that op's second output: the conv's last
# dimension.)
MEASURE = """
import json, sys
import alexnet_tf, keras, numpy as np, tensorflow as tf
from alexnet_tf import distribute, hybrid
from alexnet_tf.model import build_model
from alexnet_tf.optim import compile_model
from alexnet_tf.train_steps import make_steps
from tensorflow.python.eager import context
cfg = alexnet_tf.load_config(None, {overrides!r} + ["distribute.strategy={strategy}", "distribute.logical_cpus=2"])
dist = distribute.setup(cfg.distribute, cfg.model.towers)
keras.utils.set_random_seed(0)
with dist.scope():
    model = build_model(cfg, tower_devices=dist.tower_devices)
    compile_model(model, cfg)
    model.optimizer.build(model.trainable_variables)
images = np.random.default_rng(0).random((16, 28, 28, 1), np.float32)
iterator = iter(tf.data.Dataset.from_tensors((images, np.arange(16) % 10)).repeat())
train_step, _ = (hybrid.make_steps if dist.kind == "hybrid" else make_steps)(model, dist)
context.context().enable_run_metadata()  # before the step's first run: its graphs are recorded when instantiated
with dist.placement(model):
    train_step(iterator)
metadata = context.context().export_run_metadata()
graph = train_step.get_concrete_function(iterator).graph

def shape(name):
    op_name, _, index = name.partition(":")
    op = graph.get_operation_by_name(op_name)
    if op.type == "Conv2DBackpropFilter" and index == "1":
        return [op.outputs[0].shape[-1]]
    return op.outputs[int(index or 0)].shape.as_list()

sends, collectives = [], []
for function in metadata.function_graphs:
    for partition in function.partition_graphs:
        for node in partition.node:
            if node.op == "_Send" and node.attr["send_device"].s != node.attr["recv_device"].s:
                dtype = tf.as_dtype(node.attr["T"].type)
                if "/ctrl/" in node.input[0]:  # a control edge between devices: no data
                    continue
                sends.append([node.input[0], dtype.name, shape(node.input[0]) if dtype.is_floating else None])
            elif node.op == "CollectiveReduceV2":
                collectives.append([node.input[0], shape(node.input[0])])
print("MEASURED " + json.dumps({{"sends": sends, "collectives": collectives, "functions": len(metadata.function_graphs)}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["hybrid", "towers", "mirrored"])
def test_bytes_between_devices_match_the_arithmetic(strategy):
    from alexnet_tf.perf import traffic
    overrides = tiny_overrides(**{"model.dropout": 0.5})
    out = run_python(MEASURE.format(overrides=overrides, strategy=strategy))
    measured = json.loads(out.split("MEASURED ", 1)[1].splitlines()[0])
    assert measured["functions"] >= 1
    tensors = [s for s in measured["sends"] if s[2]]  # floating point, rank >= 1
    other = [s for s in measured["sends"] if not s[2]]  # scalars: learning rate reads; int64 dropout seeds
    sent = sum(4 * int(np.prod(s[2])) for s in tensors)
    # a ring all-reduce over D = 2 devices: each sends 2(D-1)/D = 1 time its gradients
    reduced = sum(4 * int(np.prod(c[1])) for c in measured["collectives"])
    s = traffic.shapes(alexnet_tf.load_config(None, overrides).model)
    items = {"hybrid": lambda: traffic.hybrid(s, 16, 2), "towers": lambda: traffic.towers(s, 16),
             "mirrored": lambda: traffic.mirrored(s, 16, 2)}[strategy]()
    assert sent + reduced == traffic.total(items), (sent, reduced, items, sorted(tensors, key=lambda t: -np.prod(t[2]))[:20])
    assert (len(measured["collectives"]) == 2) == (strategy == "mirrored")
    assert len(other) < 40 and all(s[1] in ("int64", "int32") or s[2] == [] for s in other), other
    assert sent + reduced > 50_000  # not vacuous


@pytest.mark.parametrize("overrides, fragment", [
    (["distribute.devices=['/gpu:0']"], "distribute.devices has 1, expected at least 2"),
    (["train.jit_compile=true"], "train.jit_compile = true with distribute.strategy = hybrid; expected false"),
])
def test_hybrid_config_errors(overrides, fragment):
    from alexnet_tf.config import ConfigError
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        alexnet_tf.load_config(None, ["distribute.strategy=hybrid", *overrides])


def test_hybrid_on_one_device_is_one_line(tmp_path, capsys):
    """No GPU and no logical CPUs: one device, which hybrid cannot split; train.py exits 2 before training."""
    from alexnet_tf import train_command
    from conftest import run_main
    assert len(tf.config.list_logical_devices("CPU")) == 1 and not tf.config.list_logical_devices("GPU")
    status, out, err = run_main(capsys, train_command.main, [
        "--run-dir", tmp_path / "run", *[a for o in tiny_overrides(**{"distribute.strategy": "hybrid"}) for a in ("--set", o)]])
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, err
    assert "distribute.strategy = hybrid needs at least 2 devices; found ['/device:CPU:0']" in lines[0], lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
