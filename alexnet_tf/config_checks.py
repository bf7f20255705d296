"""The checks that span several config keys or need the environment, run by `config.load_config` after
each key's own type and range check. Like config.py this module must not import TensorFlow: each check
exists so that a run that cannot work stops with one line before TensorFlow starts.

  keys together    lists of layers and steps, the model's shape, data source against model, distribute
  TF_CONFIG        the cluster of distribute.strategy = multi_worker (distribute._multi_worker reads it)
  input            distribute.input and data.service against the strategy, source and workers (input_modes.py)
  batch size       data.batch_size against the training set, where its size is known without TensorFlow

config.py imports this module (and re-exports FILE_SOURCES) and then runs memory_checks.py's checks; this module imports nothing of config.py,
so the checks see a config only through its attributes.
"""

import json
import os
import re

from alexnet_tf.errors import ConfigError, shown
from alexnet_tf.input_modes import check_input


# Sources read from image files (decoded, rescaled and cropped in tf.data); the others are in-memory arrays.
FILE_SOURCES = ("imagenet", "folder", "tfds", "prepared")
# Every copy of Fashion-MNIST holds exactly these (Xiao et al. 2017); data/fashion_mnist.py rejects a
# file that differs as damaged.
FASHION_MNIST_SIZES = {"train": 60_000, "val": 10_000}

TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
# TensorFlow's own cluster jobs (multi_worker_util._validate_cluster_spec); this project trains as chief and worker.
_TF_JOBS = ("chief", "worker", "evaluator", "ps")
# host:port as the workers' gRPC servers listen and connect: a host name, an IPv4 address or a bracketed IPv6 one.
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


def check(cfg):
    """Every check of this module, in this order; the first that fails raises its ConfigError."""
    for one_check in (check_remove_conv, check_profile_steps, check_lr_drop_epochs, check_warmup, check_model_shape,
                      check_file_source, check_in_memory_subsets, check_upscale, check_augment_on, check_lighting, check_devices,
                      check_strategy, check_fashion_mnist_shape, check_tf_config, check_input, check_batch_size,
                      check_lrn_kernel):
        one_check(cfg)


# === Keys together ===

def check_lrn_kernel(cfg):
    """The fused LRN op has no XLA kernel (auto picks the formula under XLA by itself)."""
    if cfg.model.lrn_kernel == "fused" and cfg.train.jit_compile:
        raise ConfigError("model.lrn_kernel = fused with train.jit_compile = true; expected auto or reference "
                          "(the fused op has no XLA kernel)")


def _positive_ints(values):
    return all(isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in values)


def check_remove_conv(cfg):
    """model.remove_conv: distinct layers from 2, 3, 4 (conv1 and conv5 stay: conv5 feeds fc6)."""
    layers = cfg.model.remove_conv
    if any(i not in (2, 3, 4) or isinstance(i, bool) for i in layers) or len(set(layers)) != len(layers):
        raise ConfigError(f"model.remove_conv = {shown(layers)}; "
                          "expected a list of distinct middle conv layers from 2, 3, 4")


def check_profile_steps(cfg):
    steps = cfg.train.profile_steps
    if steps and not (len(steps) == 2 and _positive_ints(steps) and steps[0] <= steps[1]):
        raise ConfigError(f"train.profile_steps = {shown(steps)}; expected [] or [first, last] with "
                          "1 <= first <= last (global training steps)")


def check_lr_drop_epochs(cfg):
    drops = cfg.train.lr_drop_epochs
    if not (_positive_ints(drops) and all(a < b for a, b in zip(drops, drops[1:]))):
        raise ConfigError(f"train.lr_drop_epochs = {shown(drops)}; expected [] or increasing epochs >= 1 "
                          "(the lr is divided by 10 after each)")


def check_warmup(cfg):
    """The warm-up ramps from train.lr to the scaled rate: without scaling there is nothing to ramp to."""
    train = cfg.train
    if train.warmup_epochs and train.lr_scaling == "none":
        raise ConfigError(f"train.warmup_epochs = {shown(train.warmup_epochs)} with train.lr_scaling = none: the warm-up "
                          "rises from train.lr to the scaled rate, which is train.lr itself; expected lr_scaling linear "
                          "or sqrt, or warmup_epochs 0")


def check_model_shape(cfg):
    """fc6 and fc7 split their units evenly over the towers; the imagenet geometry needs room for its pools."""
    m = cfg.model
    if m.fc_units % m.towers:
        raise ConfigError(f"model.fc_units = {m.fc_units} is not divisible by "
                          f"model.towers = {m.towers}; expected a multiple of the tower count")
    if m.geometry == "imagenet" and m.image_size < 67:
        raise ConfigError(f"model.image_size = {m.image_size} is too small for "
                          "geometry imagenet (conv1 11x11/4 and three 3x3/2 pools need >= 67); use geometry small")


def check_file_source(cfg):
    """File sources give RGB images rescaled to data.resize, and need their dataset named."""
    d, m = cfg.data, cfg.model
    if d.source not in FILE_SOURCES:
        return
    if m.channels != 3:
        raise ConfigError(f"data.source = {d.source} gives RGB images; expected model.channels = 3, got {m.channels}")
    if d.resize < m.image_size:
        raise ConfigError(f"data.resize = {d.resize} is smaller than model.image_size = {m.image_size}; "
                          "expected a rescaled image at least as large as the crop")
    if d.random_crop:
        raise ConfigError(f"data.random_crop = {d.random_crop} pads in-memory images; for data.source = {d.source} "
                          "crops come from data.resize (set data.crop instead)")
    if d.source == "folder" and not d.path:
        raise ConfigError("data.source = folder needs data.path = a directory with train/<class>/ and val/<class>/")
    if d.source == "prepared" and not d.path:
        raise ConfigError("data.source = prepared needs data.path = the directory `alexnet-tf prepare --out` wrote")
    if d.source == "tfds" and not d.tfds_name:
        raise ConfigError("data.source = tfds needs data.tfds_name, e.g. imagenette/320px")
    if d.source == "imagenet" and m.num_classes != 1000:
        raise ConfigError(f"data.source = imagenet has 1000 classes; got model.num_classes = {m.num_classes}")


def check_in_memory_subsets(cfg):
    """data.val_examples and data.train_examples take subsets of an in-memory training split."""
    d = cfg.data
    available = source_training_images(d)
    for key in ("val_examples", "train_examples"):
        if getattr(d, key) and available is None:
            raise ConfigError(f"data.{key} = {getattr(d, key)} subsets in-memory data; "
                              f"expected 0 for data.source = {d.source}")
    if d.val_examples and d.val_examples >= available:
        raise ConfigError(f"data.val_examples = {d.val_examples} leaves no training images of the {available} "
                          f"of data.source = {d.source}; expected 0 to {available - 1}")
    if d.train_examples:
        available -= d.val_examples
        if d.train_examples > available:
            raise ConfigError(f"data.train_examples = {d.train_examples} exceeds the {available} training "
                              f"images of data.source = {d.source}" + (f" left after data.val_examples = {d.val_examples}"
                                                                         if d.val_examples else "")
                              + f"; expected 0 (all) to {available}")


def check_upscale(cfg):
    """data.upscale rescales in-memory images to at least the crop, and is the only crop."""
    d, m = cfg.data, cfg.model
    if not d.upscale:
        return
    if source_training_images(d) is None:
        raise ConfigError(f"data.upscale = {d.upscale} rescales in-memory images; for data.source = {d.source} "
                          "set data.resize instead")
    if d.upscale < m.image_size:
        raise ConfigError(f"data.upscale = {d.upscale} is smaller than model.image_size = {m.image_size}; "
                          "expected an image at least as large as the crop")
    if d.random_crop:
        raise ConfigError(f"data.random_crop = {d.random_crop} and data.upscale = {d.upscale} both crop; "
                          "expected one of them (upscale crops model.image_size out of the rescaled image)")


def check_augment_on(cfg):
    """data.augment_on device takes uint8 images: in-memory ones uncropped (padding and rescaling make floats)."""
    d = cfg.data
    if d.augment_on == "device" and (d.random_crop or d.upscale):
        key = "data.random_crop" if d.random_crop else "data.upscale"
        raise ConfigError(f"data.augment_on = device with {key} = {getattr(d, key.split('.')[1])}: the device takes "
                          f"uint8 crops, and {key} makes float images; expected data.augment_on = host or {key} = 0")


def check_lighting(cfg):
    if cfg.data.lighting and cfg.model.channels != 3:
        raise ConfigError(f"data.lighting = true needs RGB images (model.channels = 3); got {cfg.model.channels}")


def check_devices(cfg):
    devices = cfg.distribute.devices
    if not all(isinstance(d, str) and d for d in devices) or len(set(devices)) != len(devices):
        raise ConfigError(f"distribute.devices = {shown(devices)}; expected a list of distinct device names "
                          "such as ['/gpu:0', '/gpu:1']")


def check_strategy(cfg):
    """distribute.strategy against the tower count, the device list and XLA."""
    dist, towers, n = cfg.distribute, cfg.model.towers, len(cfg.distribute.devices)
    if dist.strategy == "towers":
        if towers != 2:
            raise ConfigError(f"distribute.strategy = towers needs the two-tower model; got model.towers = {towers}")
        if n not in (0, towers):
            raise ConfigError(f"distribute.strategy = towers places one tower per device; distribute.devices "
                              f"has {n} devices, expected {towers} (or [] for the first {towers})")
        if cfg.train.jit_compile:
            raise ConfigError("train.jit_compile = true with distribute.strategy = towers; expected false "
                              "(one XLA cluster cannot keep each tower on its own device)")
    if dist.strategy == "hybrid":
        if n == 1:
            raise ConfigError("distribute.strategy = hybrid splits the batch and the fc units over devices; distribute.devices "
                              "has 1, expected at least 2 (or [] for every local device)")
        if cfg.train.jit_compile:
            raise ConfigError("train.jit_compile = true with distribute.strategy = hybrid; expected false "
                              "(one XLA cluster cannot keep each block on its own device)")
    if dist.strategy == "default" and n > 1:
        raise ConfigError(f"distribute.strategy = default runs on one device; distribute.devices has {n} "
                          "(use strategy mirrored, towers or hybrid)")
    if dist.cluster != "auto" and dist.strategy != "multi_worker":
        raise ConfigError(f"distribute.cluster = {dist.cluster} with distribute.strategy = {dist.strategy}; expected "
                          "strategy multi_worker (the only one with a cluster) or cluster auto")
    if dist.strategy == "multi_worker" and n:
        raise ConfigError(f"distribute.devices = {shown(dist.devices)} with strategy multi_worker; expected [] "
                          "(each worker uses all its GPUs, or its CPU)")


def check_fashion_mnist_shape(cfg):
    """Fashion-MNIST's images are 28x28 grey (or rescaled by data.upscale) in 10 classes."""
    d, m = cfg.data, cfg.model
    if d.source == "fashion_mnist" and ((m.channels, m.num_classes) != (1, 10) or (m.image_size != 28 and not d.upscale)):
        raise ConfigError(
            f"data.source = fashion_mnist needs model.image_size=28 (or data.upscale >= model.image_size), "
            f"model.channels=1, model.num_classes=10; got {m.image_size}, {m.channels}, {m.num_classes}")


# === TF_CONFIG (distribute.strategy = multi_worker) ===

def check_tf_config(cfg, environ=os.environ):
    """Validate TF_CONFIG as distribute._multi_worker and MultiWorkerMirroredStrategy read it:
    a JSON object {"cluster": {"worker": [host:port, ...], "chief": [host:port]?}, "task": {"type":
    "worker" | "chief", "index": i}} with 0 <= i < len(cluster[type]).

    Only for strategy multi_worker, and only when TF_CONFIG is set and distribute.cluster is not slurm:
    train_command reports a missing one (slurm.cluster_source), and other commands (evaluate, predict) read a multi_worker run's saved config without it.
    """
    text = environ.get("TF_CONFIG")
    if cfg.distribute.strategy != "multi_worker" or not text or cfg.distribute.cluster == "slurm":
        return
    tf_config = _parse_tf_config(text)
    cluster = tf_config.get("cluster")
    _check_cluster(cluster)
    for job, addresses in cluster.items():
        _check_addresses(job, addresses)
    if len(cluster.get("chief", [])) > 1:  # MultiWorkerMirroredStrategy allows one chief
        raise ConfigError(f"TF_CONFIG cluster.chief = {_json(cluster['chief'])}; expected at most one address")
    _check_task(tf_config.get("task"), cluster)


def _parse_tf_config(text):
    """TF_CONFIG's text as a JSON object."""
    expected = f"expected a JSON object such as {TF_CONFIG_EXAMPLE} for distribute.strategy = multi_worker"
    try:
        tf_config = json.loads(text)
    except ValueError as e:  # json.JSONDecodeError: "Expecting value: line 1 column 1 (char 0)"
        shown = repr(text if len(text) <= 60 else text[:60] + "...")  # repr: one line whatever the variable holds
        raise ConfigError(f"TF_CONFIG = {shown} is not JSON ({e}); {expected}") from None
    if not isinstance(tf_config, dict):
        raise ConfigError(f"TF_CONFIG = {_json(tf_config)} is not a JSON object; {expected}")
    return tf_config


def _check_cluster(cluster):
    """A mapping of TensorFlow's jobs with a non-empty worker list."""
    if not isinstance(cluster, dict):
        raise ConfigError(f"TF_CONFIG cluster = {_json(cluster)}; expected a mapping of jobs to "
                          f'"host:port" lists with a worker list, e.g. {TF_CONFIG_EXAMPLE}')
    for job in cluster:
        if job not in _TF_JOBS:
            raise ConfigError(f"TF_CONFIG cluster has job {_json(job)}; expected jobs among "
                              f"{', '.join(_TF_JOBS)} (multi_worker trains on chief and worker)")
    workers = cluster.get("worker")
    if not isinstance(workers, list) or not workers:
        raise ConfigError(f"TF_CONFIG cluster.worker = {_json(workers)}; expected a non-empty list of "
                          '"host:port" addresses, one per worker process')


def _check_addresses(job, addresses):
    """One job's list of host:port addresses."""
    if not isinstance(addresses, list):
        raise ConfigError(f"TF_CONFIG cluster.{job} = {_json(addresses)}; expected a list of "
                          '"host:port" addresses')
    for i, address in enumerate(addresses):
        match = isinstance(address, str) and _ADDRESS.fullmatch(address)
        if not match or not 1 <= int(match.group(2)) <= 65535:
            raise ConfigError(f"TF_CONFIG cluster.{job}[{i}] = {_json(address)}; expected "
                              '"host:port" with a port in 1..65535, e.g. "host1:12345"')


def _check_task(task, cluster):
    """This process's job (worker or chief, one of the cluster's) and its index in that job's list."""
    kind = task.get("type") if isinstance(task, dict) else None
    if kind not in ("worker", "chief"):
        raise ConfigError(f"TF_CONFIG task.type = {_json(kind)}; expected worker or chief "
                          "(this process's job in the cluster)")
    if kind not in cluster:
        raise ConfigError(f"TF_CONFIG task.type = {_json(kind)} but the cluster has no {kind} list; "
                          "expected a job of the cluster (worker, or chief with a cluster.chief address)")
    index, count = task.get("index"), len(cluster[kind])
    # TensorFlow reads the index with int(): 1 and "1" both work; a missing index fails inside the strategy.
    number = index if isinstance(index, int) and not isinstance(index, bool) else \
        int(index) if isinstance(index, str) and index.isascii() and index.isdecimal() else None
    if number is None or not 0 <= number < count:
        raise ConfigError(f"TF_CONFIG task.index = {_json(index)}; expected an integer in [0, {count - 1}] "
                          f"(cluster.{kind} has {count} address{'es' if count > 1 else ''})")


def _json(value):
    """A TF_CONFIG value as JSON, on one line, cut at 80 characters."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


# === The training set's size, where it is known without TensorFlow ===

def source_training_images(d):
    """Images in the training split of an in-memory source (a DataConfig `d`), before data.val_examples
    holds some out: Fashion-MNIST's 60,000, synthetic's data.synthetic_size. None for file sources:
    TFDS or the folder scan counts those once TensorFlow runs."""
    return {"fashion_mnist": FASHION_MNIST_SIZES["train"], "synthetic": d.synthetic_size}.get(d.source)


def training_set_size(d):
    """Images a run trains on, where known before TensorFlow loads them, else None: data.train_examples
    if set, else the source's training split (`source_training_images`) minus data.val_examples."""
    available = source_training_images(d)
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
    raise ConfigError(f"data.batch_size = {d.batch_size} is larger than the {size} training images "
                      f"({why}); expected 1 to {size}")
