"""Config checks that need the environment or arithmetic over several keys (issue 14), run by
`config.load_config` after the per-key checks. Like config.py this module must not import TensorFlow:
each check exists so that a run that cannot work stops with one line before TensorFlow starts.

  TF_CONFIG        the cluster of distribute.strategy = multi_worker (distribute._multi_worker reads it)
  memory           the model's weights, momentum, gradients and a checkpoint copy against the RAM
  batch size       data.batch_size against the training set, where its size is known without TensorFlow
"""

import json
import os
import re

from alexnet_tf.config import FILE_SOURCES, ConfigError

# The paper's kernels per conv layer (both towers); alexnet_tf.model imports these.
PAPER_CONV_CHANNELS = (96, 256, 384, 384, 256)

# Bytes a training run holds per model parameter: float32 (4 bytes; the mixed policies keep float32
# variables too) x 4 copies: the weights, PaperSGD's momentum, the gradients and the copy a checkpoint
# write serialises. Activations, the input pipeline and TensorFlow itself come on top, so the estimate is
# a lower bound: a config it rejects cannot run on this machine.
BYTES_PER_PARAMETER = 4 * 4

TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
# TensorFlow's own cluster jobs (multi_worker_util._validate_cluster_spec); this project trains as chief and worker.
_TF_JOBS = ("chief", "worker", "evaluator", "ps")
# host:port as the workers' gRPC servers listen and connect: a host name, an IPv4 address or a bracketed IPv6 one.
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")
GiB = 2**30


def check(cfg):
    """Every check of this module, in order: TF_CONFIG, memory, batch size."""
    check_tf_config(cfg)
    check_memory(cfg)
    check_batch_size(cfg)


# === TF_CONFIG (distribute.strategy = multi_worker) ===

def check_tf_config(cfg, environ=os.environ):
    """Validate TF_CONFIG as distribute._multi_worker and MultiWorkerMirroredStrategy read it:
    a JSON object {"cluster": {"worker": [host:port, ...], "chief": [host:port]?}, "task": {"type":
    "worker" | "chief", "index": i}} with 0 <= i < len(cluster[type]).

    Only for strategy multi_worker, and only when TF_CONFIG is set: train_command reports a missing
    one, and other commands (evaluate, predict) read a multi_worker run's saved config without it.
    """
    text = environ.get("TF_CONFIG")
    if cfg.distribute.strategy != "multi_worker" or not text:
        return
    expected = f"expected a JSON object such as {TF_CONFIG_EXAMPLE} for distribute.strategy = multi_worker"
    try:
        tf_config = json.loads(text)
    except ValueError as e:  # json.JSONDecodeError: "Expecting value: line 1 column 1 (char 0)"
        shown = repr(text if len(text) <= 60 else text[:60] + "...")  # repr: one line whatever the variable holds
        raise ConfigError(f"config error: TF_CONFIG = {shown} is not JSON ({e}); {expected}") from None
    if not isinstance(tf_config, dict):
        raise ConfigError(f"config error: TF_CONFIG = {_json(tf_config)} is not a JSON object; {expected}")
    cluster = tf_config.get("cluster")
    if not isinstance(cluster, dict):
        raise ConfigError(f"config error: TF_CONFIG cluster = {_json(cluster)}; expected a mapping of jobs to "
                          f'"host:port" lists with a worker list, e.g. {TF_CONFIG_EXAMPLE}')
    for job in cluster:
        if job not in _TF_JOBS:
            raise ConfigError(f"config error: TF_CONFIG cluster has job {_json(job)}; expected jobs among "
                              f"{', '.join(_TF_JOBS)} (multi_worker trains on chief and worker)")
    workers = cluster.get("worker")
    if not isinstance(workers, list) or not workers:
        raise ConfigError(f"config error: TF_CONFIG cluster.worker = {_json(workers)}; expected a non-empty list of "
                          '"host:port" addresses, one per worker process')
    for job, addresses in cluster.items():
        if not isinstance(addresses, list):
            raise ConfigError(f"config error: TF_CONFIG cluster.{job} = {_json(addresses)}; expected a list of "
                              '"host:port" addresses')
        for i, address in enumerate(addresses):
            match = isinstance(address, str) and _ADDRESS.fullmatch(address)
            if not match or not 1 <= int(match.group(2)) <= 65535:
                raise ConfigError(f"config error: TF_CONFIG cluster.{job}[{i}] = {_json(address)}; expected "
                                  '"host:port" with a port in 1..65535, e.g. "host1:12345"')
    if len(cluster.get("chief", [])) > 1:  # MultiWorkerMirroredStrategy allows one chief
        raise ConfigError(f"config error: TF_CONFIG cluster.chief = {_json(cluster['chief'])}; expected at most one address")
    task = tf_config.get("task")
    kind = task.get("type") if isinstance(task, dict) else None
    if kind not in ("worker", "chief"):
        raise ConfigError(f"config error: TF_CONFIG task.type = {_json(kind)}; expected worker or chief "
                          "(this process's job in the cluster)")
    if kind not in cluster:
        raise ConfigError(f"config error: TF_CONFIG task.type = {_json(kind)} but the cluster has no {kind} list; "
                          "expected a job of the cluster (worker, or chief with a cluster.chief address)")
    index, count = task.get("index"), len(cluster[kind])
    # TensorFlow reads the index with int(): 1 and "1" both work; a missing index fails inside the strategy.
    number = index if isinstance(index, int) and not isinstance(index, bool) else \
        int(index) if isinstance(index, str) and index.isascii() and index.isdecimal() else None
    if number is None or not 0 <= number < count:
        raise ConfigError(f"config error: TF_CONFIG task.index = {_json(index)}; expected an integer in [0, {count - 1}] "
                          f"(cluster.{kind} has {count} address{'es' if count > 1 else ''})")


def _json(value):
    """A TF_CONFIG value as JSON, on one line, cut at 80 characters."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


# === Memory: parameters of model.alexnet ===

def tower_channels(towers, width):
    """Kernels per tower for conv1..conv5 (alexnet_tf.model uses this one).

    towers=2: half of the paper's kernels on each tower. towers=1 is the paper's one-GPU
    baseline (§3.2): half the kernels in every conv layer except conv5, which keeps all 256
    (footnote 2: conv5 feeds fc6, which holds most parameters, so it was not halved).
    """
    half = [c // 2 for c in PAPER_CONV_CHANNELS]
    if towers == 1:
        half[4] = PAPER_CONV_CHANNELS[4]
    return [max(1, round(c * width)) for c in half]


def parameter_count(m):
    """Trainable + non-trainable parameters of `model.alexnet` for a ModelConfig `m` (= count_params()).

    T = towers, c = tower_channels(T, width), C = channels, s = image_size, k1 = conv1 kernel, p = 3
    (overlapping) or 2 (pool size, stride 2, valid: n -> (n - p) // 2 + 1):

      conv (k x k, in -> out, per tower)  T * (k*k*in + 1) * out
      conv1    k1 x k1, C -> c0; output side s (small: 'same', stride 1) or 1 + ceil((s - k1) / 4)
               (imagenet: cuda-convnet's rounding), then pool
      conv2    5x5, c0 -> c1 (unless removed), then pool
      conv3-5  3x3; the first one present reads both towers (in = T * its input's channels), the
               others their own; conv5 (never removed) -> c4, then pool to side n5
      conv6    3x3, c4 -> c4 (if model.conv6)
      fc6      T * (T*n5*n5*c4 + 1) * (fc_units / T)
      fc7      T * (fc_units + 1) * (fc_units / T)
      fc8      (fc_units + 1) * num_classes
    LRN, pooling, dropout, padding and concatenation have no weights. The paper model has 60,965,224.
    """
    T, c = m.towers, tower_channels(m.towers, m.width)
    p = 3 if m.pool == "overlapping" else 2

    def conv(k, cin, cout):
        return T * (k * k * cin + 1) * cout

    def pool(n):
        return max(0, (n - p) // 2 + 1)

    if m.geometry == "imagenet":
        k1 = m.conv1_kernel or 11
        side = max(0, 1 - (-(m.image_size - k1) // 4))  # 1 + ceil((s - k1) / 4)
    else:
        k1, side = m.conv1_kernel or 3, m.image_size
    total = conv(k1, m.channels, c[0])
    side, cin = pool(side), c[0]
    if 2 not in m.remove_conv:
        total += conv(5, cin, c[1])
        cin = c[1]
    side = pool(side)
    crossed = False
    for i, cout in ((3, c[2]), (4, c[3]), (5, c[4])):
        if i in m.remove_conv:
            continue
        total += conv(3, cin if crossed else T * cin, cout)
        cin, crossed = cout, True
    side = pool(side)
    if m.conv6:
        total += conv(3, c[4], c[4])
    per_tower = m.fc_units // T
    total += T * (T * side * side * c[4] + 1) * per_tower      # fc6
    total += T * (m.fc_units + 1) * per_tower                   # fc7
    return total + (m.fc_units + 1) * m.num_classes             # fc8


def physical_ram():
    """Bytes of physical RAM (page size x pages), or None where the OS does not say (Windows).
    In a container this is the host's RAM: a cgroup limit can be smaller, never larger."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(cfg):
    """Reject a model whose BYTES_PER_PARAMETER x parameter_count exceeds the physical RAM.

    The bound is for CPU training, this project's set-up; on GPUs the weights, momentum and gradients
    live in GPU memory and only the checkpoint copy needs RAM, so there it can reject a model that would fit."""
    ram = physical_ram()
    if not ram or ram <= 0:
        return
    m = cfg.model
    params = parameter_count(m)
    need = BYTES_PER_PARAMETER * params
    if need > ram:
        raise ConfigError(f"config error: model.width = {m.width}, model.fc_units = {m.fc_units}, model.image_size = "
                          f"{m.image_size} give {params:,} parameters, whose weights, momentum, gradients and checkpoint "
                          f"copy (float32, {BYTES_PER_PARAMETER} bytes per parameter) need ~{need / GiB:,.1f} GiB, more "
                          f"than this machine's {ram / GiB:,.1f} GiB of RAM; expected a smaller model.width, "
                          "model.fc_units or model.image_size")


# === Batch size against the training set ===

def training_set_size(d):
    """Training images of an in-memory source before TensorFlow loads it, else None (file sources
    are counted by TFDS or the folder scan): data.train_examples if set, else the source's training
    split (fashion_mnist 60,000; synthetic data.synthetic_size) minus data.val_examples."""
    if d.source in FILE_SOURCES:
        return None
    available = {"fashion_mnist": 60000, "synthetic": d.synthetic_size}.get(d.source)
    if available is None:
        return None
    return d.train_examples or available - d.val_examples


def check_batch_size(cfg):
    """A batch larger than the training set gives zero training steps (batches drop their remainder)."""
    d = cfg.data
    size = training_set_size(d)
    if size is None or d.batch_size <= size:
        return
    if d.train_examples:
        why = f"data.train_examples = {d.train_examples}"
    else:
        why = f"data.source = {d.source}" + (f" after data.val_examples = {d.val_examples}" if d.val_examples else "")
    raise ConfigError(f"config error: data.batch_size = {d.batch_size} is larger than the {size} training images "
                      f"({why}); expected 1 to {size}")

