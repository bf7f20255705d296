"""One typed config per run: YAML file -> dataclasses, `--set` overrides, validation.

This module must not import TensorFlow: configs are validated (and bad ones rejected with
one line) before any heavy work starts.
"""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import yaml

# FILE_SOURCES is defined with the cross-key checks, which import nothing from this module; ConfigError,
# the one error of a bad config, is re-exported for users' code (`from alexnet_tf.config import ConfigError`).
from alexnet_tf import bounded_yaml, memory_checks
from alexnet_tf.config_checks import FILE_SOURCES, check  # noqa: F401
from alexnet_tf.errors import ConfigError, shown  # noqa: F401  (ConfigError: re-exported)
from alexnet_tf.slurm import CLUSTERS
from alexnet_tf.user_files import read_user_file


def _spec(default, *, choices=None, lo=None, hi=None, lo_open=False, doc=""):
    """A config field with its allowed values, kept next to the default."""
    metadata = dict(choices=choices, lo=lo, hi=hi, lo_open=lo_open, doc=doc)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(slots=True)  # slots: assigning a mistyped attribute raises instead of adding one
class ModelConfig:
    """Architecture (paper §3). Every ablation variant is one of these switches."""

    towers: int = _spec(2, choices=(1, 2), doc="2 = the paper's two-GPU net; 1 = one net with half the kernels (§3.2)")
    num_classes: int = _spec(1000, lo=2, doc="size of fc8")
    image_size: int = _spec(224, lo=8, doc="side of the square crop the model sees (224 or 227 for ImageNet)")
    channels: int = _spec(3, lo=1, doc="input channels")
    geometry: str = _spec("imagenet", choices=("imagenet", "small"),
                          doc="imagenet: conv1 11x11/4 with cuda-convnet's rounding; small: conv1 3x3/1 'same' for 28-64 px images")
    conv1_kernel: int = _spec(0, lo=0, doc="conv1 kernel size; 0 = by geometry: 11 (imagenet, stride 4) or 3 (small, stride 1)")
    width: float = _spec(1.0, lo=0.0, lo_open=True, doc="multiplier on every conv layer's kernel count")
    fc_units: int = _spec(4096, lo=2, doc="units in fc6 and fc7 (split evenly over the towers)")
    activation: str = _spec("relu", choices=("relu", "tanh"), doc="§3.1")
    lrn: bool = _spec(True, doc="local response normalisation after conv1 and conv2 (§3.3)")
    lrn_constant: bool = _spec(False, doc="replace each LRN layer by its constant factor k^-beta (what LRN becomes when "
                                          "alpha * sum a^2 << k): an ablation that separates normalisation from rescaling")
    lrn_convention: str = _spec("paper", choices=("paper", "caffe"),
                                doc="paper: k=2, alpha as written; caffe: k=1, alpha/n (Caffe, PyTorch)")
    lrn_across_towers: bool = _spec(False, doc="false: each tower normalises its own channels (the paper's towers on their GPUs); "
                                    "true: the windows run across both towers' channels, as Caffe's LRN over a grouped "
                                    "conv (bvlc_alexnet); no effect with one tower")
    lrn_kernel: str = _spec("auto", choices=("auto", "fused", "reference"), doc="how LRN is computed, not what: fused = the C++ "
                            "op `make setup` builds (one pass each way), reference = the pure-TF formula, auto = fused where built and usable (CPU, no XLA)")
    pool: str = _spec("overlapping", choices=("overlapping", "non_overlapping"), doc="3x3/2 (§3.4) or 2x2/2")
    dropout: float = _spec(0.5, lo=0.0, hi=0.95, doc="dropout rate after fc6 and fc7 (§4.2)")
    conv6: bool = _spec(False, doc="the '1 CNN*' sixth conv layer after the last pooling layer (§6)")
    remove_conv: list = _spec([], doc="middle conv layers to remove, from {2, 3, 4} (§7)")
    weight_init: str = _spec("normal", choices=("normal", "he_normal"),
                             doc="normal: N(0, weight_std) as in the paper; he_normal: He et al. 2015")
    weight_std: float = _spec(0.01, lo=0.0, lo_open=True, doc="std of the normal initialiser (paper 0.01)")
    hidden_bias: float = _spec(1.0, doc="bias of conv2, conv4, conv5, fc6, fc7 (paper 1, Caffe 0.1); others 0")


@dataclass(slots=True)  # slots: assigning a mistyped attribute raises instead of adding one
class DataConfig:
    source: str = _spec("synthetic", choices=("fashion_mnist", "synthetic", "imagenet", "folder", "tfds", "prepared"),
                        doc="fashion_mnist: the real 70k images; synthetic: random images and labels (tests, benchmarks); "
                            "imagenet: ILSVRC-2012 via TFDS's imagenet2012 builder from the manual tars; "
                            "folder: data.path/train/<class>/* and data.path/val/<class>/*; tfds: any prepared TFDS dataset (data.tfds_name); "
                            "prepared: the 256x256 JPEG shards `alexnet-tf prepare` wrote to data.path (random crops decoded straight from the JPEG)")
    path: str = _spec("", doc="directory holding the dataset files ('' = the standard places); for source folder the root with train/ and val/; "
                                "for source prepared the directory `alexnet-tf prepare --out` wrote")
    manual_dir: str = _spec("", doc="source imagenet: directory with ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar ('' = <tfds_data_dir>/downloads/manual)")
    tfds_data_dir: str = _spec("", doc="TFDS data directory for sources imagenet and tfds ('' = TFDS's default, ~/tensorflow_datasets)")
    tfds_name: str = _spec("", doc="source tfds: the dataset name, e.g. imagenette/320px or cifar10 (must already be prepared)")
    tfds_val_split: str = _spec("", doc="source tfds: the split to validate on ('' = validation if the dataset has one, else test)")
    batch_size: int = _spec(128, lo=1, doc="global batch size (§5: 128)")
    resize: int = _spec(256, lo=8, doc="file sources: shorter side rescaled to this, then the central resize x resize square is kept (§2: 256)")
    crop: str = _spec("random", choices=("random", "center"),
                      doc="file sources, training: a model.image_size crop at a random position (§4.1) or always the centre (ablation)")
    mean: str = _spec("image", choices=("image", "channel", "none"),
                      doc="subtract the training set's per-pixel mean image (§2), per-channel mean, or nothing")
    scale: float = _spec(1.0, lo=0.0, lo_open=True,
                         doc="factor applied after mean subtraction; 1 = the paper's raw 0..255 pixel values, 1/255 = [0, 1] range")
    random_crop: int = _spec(0, lo=0, doc="in-memory sources: pad by this many pixels and take a random crop of the original size (0 = off)")
    upscale: int = _spec(0, lo=0, doc="in-memory sources: bilinearly rescale every image to upscale x upscale, then train on random "
                                      "model.image_size crops and evaluate the centre crop, as §2/§4.1 do with 256 and 224 "
                                      "(Fashion-MNIST at the paper's geometry); 0 = the arrays' own size. Bounded by the RAM: a float32 batch "
                                      "at this size, the mean image and the model must fit (the config error names the largest that does)")
    flip: bool = _spec(True, doc="random horizontal flips at training time (§4.1)")
    lighting: bool = _spec(False, doc="PCA lighting (§4.1): add sum_i alpha_i sqrt(lambda_i) p_i to every pixel, alpha_i drawn once per image and presentation")
    lighting_std: float = _spec(0.1, lo=0.0, doc="standard deviation of alpha_i (§4.1: 0.1)")
    pca: str = _spec("stats", choices=("stats", "fb_resnet"),
                     doc="lighting eigenvectors/eigenvalues: stats = computed over the training set (python -m alexnet_tf stats); "
                         "fb_resnet = the published fb.resnet.torch ImageNet constants")
    stats_file: str = _spec("", doc="mean image + RGB covariance eigen-decomposition (.npz) to use or create ('' = a file in data.cache_dir named after the data)")
    stats_images: int = _spec(0, lo=0, doc="training images the stats are computed over (0 = all, as the paper)")
    follow_symlinks_outside: bool = _spec(False, doc="source folder: read images whose symbolic links (the file's or its class "
                                          "folder's) resolve outside data.path; false: each is skipped with one warning line")
    scan: bool = _spec(True, doc="file sources: decode every image once (cached) to name and skip undecodable files before training "
                                        "(source prepared: not needed, `prepare` left them out and named them in prepare.json)")
    cache_dir: str = _spec("", doc="where stats and scan results are cached ('' = ~/.cache/alexnet_tf)")
    shuffle_buffer: int = _spec(60000, lo=1, doc="tf.data shuffle buffer in examples (sources imagenet/tfds/prepared: encoded images in memory; "
                                                 "source folder shuffles its whole file list)")
    synthetic_size: int = _spec(512, lo=1, doc="examples per split for source=synthetic")
    train_examples: int = _spec(0, lo=0, doc="in-memory sources: train on a fixed random subset of this many training images "
                                            "(0 = all); the same subset for every train.seed (ablation budgets)")
    augment_on: str = _spec("host", choices=("host", "device"),
                            doc="host: tf.data delivers the network's float32 inputs (the paper's CPU-side augmentation); device: "
                                "tf.data delivers uint8 crops and their random draws, and the mean, flip, PCA lighting and scale "
                                "run first in the training step on each replica's device, bit-identical (device_augment.py)")
    service: str = _spec("", doc="grpc://HOST:PORT of a tf.data service dispatcher (`alexnet-tf data-service`): the training "
                                 "pipeline runs on the service's workers in distributed_epoch mode, every example once per epoch "
                                 "in an order that is not reproducible; a resumed run keeps the model, optimizer and step exactly, "
                                 "not the interrupted epoch's examples (docs/distribute.md); '' = decode in the training process")
    val_examples: int = _spec(0, lo=0, doc="in-memory sources: hold this many training images out as the validation split "
                                          "(a fixed random subset, the same for every train.seed), and evaluate the source's "
                                          "test split once, after training (metrics.json test_*); 0 = validate on the test split")


@dataclass(slots=True)  # slots: assigning a mistyped attribute raises instead of adding one
class TrainConfig:
    epochs: int = _spec(90, lo=1, doc="passes over the training set (§5: ~90)")
    steps_per_epoch: Optional[int] = _spec(None, lo=1, doc="cap on steps per epoch (null = the whole split)")
    val_steps: Optional[int] = _spec(None, lo=1, doc="cap on validation steps (null = the whole split)")
    lr: float = _spec(0.01, lo=0.0, lo_open=True, doc="initial learning rate ε (§5) at train.base_batch examples per step")
    base_batch: int = _spec(128, lo=1, doc="the global batch train.lr is meant for (§5: 128); lr_scaling scales from it")
    lr_scaling: str = _spec("none", choices=("none", "linear", "sqrt"),
                            doc="learning rate at the global batch B (data.batch_size): none = train.lr (the paper); linear = "
                                "train.lr x B/base_batch (Goyal et al. 2017); sqrt = train.lr x sqrt(B/base_batch) (Krizhevsky 2014)")
    warmup_epochs: float = _spec(0.0, lo=0.0, doc="gradual warm-up (Goyal et al. 2017): the rate rises linearly per step from "
                                 "train.lr to the scaled rate over this many epochs; 0 = none (the paper)")
    optimizer: str = _spec("paper", choices=("paper", "lars"),
                           doc="paper: the §5 rule (optim.PaperSGD); lars: the same momentum and weight decay with You et al. "
                               "2017's layer-wise rate trust x |w|/(|dL/dw| + weight_decay |w|) on every kernel (optim.LARS)")
    lars_trust: float = _spec(0.001, lo=0.0, lo_open=True, doc="LARS trust coefficient η (You et al. 2017: 0.001)")
    momentum: float = _spec(0.9, lo=0.0, hi=1.0, doc="§5")
    weight_decay: float = _spec(0.0005, lo=0.0, doc="inside the momentum, as in §5")
    decay_biases: bool = _spec(False, doc="also decay biases (the paper decays the weights w)")
    lr_patience: int = _spec(2, lo=0, doc="epochs without a new best val top-1 error before lr /= 10")
    lr_max_reductions: int = _spec(3, lo=0, doc="how often lr is divided by 10 at most (§5: three times)")
    lr_min_delta: float = _spec(0.0, lo=0.0, doc="improvement in val top-1 error that counts as progress")
    lr_drop_epochs: list = _spec([], doc="divide lr by 10 after each of these epochs instead of on plateaus (lr_patience, "
                                 "lr_max_reductions and lr_min_delta then unused; the ablation study: the same lr history "
                                 "for every run); [] = the paper's plateau rule")
    seed: int = _spec(0, lo=0, hi=2**32 - 1, doc="seed for initialisation, dropout, shuffling and augmentation")
    precision: str = _spec("float32", choices=("float32", "mixed_bfloat16", "mixed_float16", "auto"),
                           doc="auto = mixed_bfloat16 on GPUs with compute capability >= 8, on CPUs with AMX, and on CPUs with "
                               "AVX512-BF16 where a bfloat16 matmul measures >= 1.2x float32; else float32")
    log_every: int = _spec(50, lo=0, doc="write batch-level loss/error to TensorBoard every N steps (0 = per epoch only)")
    jit_compile: bool = _spec(False, doc="XLA-compile each replica's training step: an option for GPUs; on CPU it is "
                              "slower (XLA CPU does not use oneDNN; measured 0.6-0.7x)")
    profile_steps: list = _spec([], doc="[first, last]: trace these global training steps with the TensorFlow profiler into "
                                "tb/train (TensorBoard's PROFILE tab: pip install tensorboard-plugin-profile); [] = off")
    deterministic: bool = _spec(False, doc="deterministic TF ops and tf.data order (slower); with a fixed seed a killed and resumed run "
                                          "ends with the same weights as an uninterrupted one")
    export: bool = _spec(True, doc="write the TF Serving SavedModel export/<version>/ when training ends; false for runs that "
                              "need only their metrics (the ablation study); `python -m alexnet_tf export` writes it later")
    init_from: str = _spec("", doc="fine-tuning: a run directory (its model.keras) or a .keras file whose weights start this run "
                                   "when it has no recovery checkpoint yet; layers matched by name, a layer whose shapes differ "
                                   "(fc8 for another class count) keeps its initialisation; loaded in Keras's safe mode before the run "
                                   "directory is touched (a file that fails, e.g. a Lambda layer's Python code, is a config error); "
                                   "'' = the initialiser")
    checkpoint_every: int = _spec(500, lo=0, doc="write the recovery checkpoint (model, momentum, schedule, data position) every N steps; "
                                                 "0 = only at the end of each epoch (always written there too)")


STRATEGIES = ("default", "mirrored", "towers", "hybrid", "multi_worker")


@dataclass(slots=True)  # slots: assigning a mistyped attribute raises instead of adding one
class DistributeConfig:
    """Devices and machines (docs/distribute.md)."""

    strategy: str = _spec("default", choices=STRATEGIES,
                          doc="default: one device; mirrored: data parallel over local devices (data.batch_size is the global batch); "
                              "towers: the paper's model parallelism (§3.2), tower k's layers forward and backward on device k; "
                              "hybrid: Krizhevsky's 'one weird trick' (arXiv 1404.5997) on local devices, conv layers data "
                              "parallel, fc6-fc8 model parallel (each device 1/D of their units for the whole batch); "
                              "multi_worker: data parallel over the machines of TF_CONFIG or of an srun step (distribute.cluster)")
    devices: list = _spec([], doc="devices to use, e.g. ['/gpu:0', '/gpu:1']; [] = every local GPU, else the logical CPUs, else the CPU "
                                  "(towers: the first model.towers of them; hybrid: at least 2)")
    logical_cpus: int = _spec(0, lo=0, hi=64, doc="split the CPU into this many logical devices (0 = off) so that mirrored, towers and hybrid run without GPUs; "
                                                  "they share the cores, and each adds thread pools and (mirrored) a copy of the weights, momentum and gradients: at most 64")
    collective_timeout: int = _spec(600, lo=0, doc="multi_worker: seconds a worker waits for the others in a step before it gives "
                                                   "up on a lost peer and restarts (0 = wait forever); must exceed the slowest "
                                                   "checkpoint write or validation")
    cluster: str = _spec("auto", choices=CLUSTERS,
                         doc="multi_worker: where the cluster comes from; tf_config: the TF_CONFIG variable; slurm: the srun "
                             "step this process is a task of (TensorFlow's SlurmClusterResolver; task i is worker i, task 0 "
                             "the chief); auto: tf_config where TF_CONFIG is set, else slurm inside an srun step")
    port_base: int = _spec(8888, lo=1024, hi=65535, doc="cluster slurm: the tasks of a node listen on ports port_base, "
                                                        "port_base + 1, ... (the same on every node; two jobs sharing a node need different ones)")
    restart_on_peer_failure: bool = _spec(True, doc="multi_worker: when a peer is lost, restart this worker's process from its last "
                                                    "checkpoint and wait for the peer to come back (false = exit with status 75)")
    input: str = _spec("auto", choices=("auto", "sharded", "replicated"),
                       doc="how the training input reaches the workers: sharded = each worker reads and decodes only its own part "
                           "of every epoch (file-level over TFRecord shards, element-level over in-memory arrays and folder file "
                           "lists), resumed exactly from the epoch and step; replicated = every worker runs the whole pipeline and "
                           "keeps its slice of each global batch (the global batches equal one device's); auto = sharded under "
                           "multi_worker, replicated otherwise (docs/distribute.md)")


@dataclass(slots=True)  # slots: assigning a mistyped attribute raises instead of adding one
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distribute: DistributeConfig = field(default_factory=DistributeConfig)
    name: str = _spec("run", doc="run name: the run directory is runs/<name> unless --run-dir is given")

    def to_dict(self):
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "distribute": DistributeConfig}


def _describe(f):
    """'an int in [1, inf)', 'one of relu, tanh', ... for error messages."""
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(str(c) for c in m["choices"])
    base = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list"}
    typ = _base_type(f)
    text = base[typ]
    if f.type == Optional[int]:
        text = "null or an integer"
    if m.get("lo") is not None or m.get("hi") is not None:
        lo = m.get("lo")
        lo_txt = "-inf" if lo is None else str(lo)
        hi_txt = "inf" if m.get("hi") is None else str(m["hi"])
        text += f" in {'(' if m.get('lo_open') else '['}{lo_txt}, {hi_txt}{']' if m.get('hi') is not None else ')'}"
    return text


def _base_type(f):
    return int if f.type == Optional[int] else f.type


def _check_value(key, f, value):
    """Type- and range-check one value; returns it converted (int -> float where a float is expected)."""
    expected = _describe(f)
    bad = ConfigError(f"{key} = {shown(value)} ({type(value).__name__}); expected {expected}")
    typ = _base_type(f)
    if value is None:
        if f.type == Optional[int]:
            return None
        raise bad
    if typ is bool:
        if not isinstance(value, bool):
            raise bad
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif typ is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value := float(value)):  # nan and inf would pass every range comparison
            raise bad
    elif typ is str:
        if not isinstance(value, str):
            raise bad
    elif typ is list:
        if not isinstance(value, list):
            raise bad
    m = f.metadata
    if m.get("choices") is not None and value not in m["choices"]:
        raise bad
    if m.get("lo") is not None:
        if value < m["lo"] or (m.get("lo_open") and value == m["lo"]):
            raise bad
    if m.get("hi") is not None and value > m["hi"]:
        raise bad
    return value


def _apply(cfg, key, value):
    """Set `section.key` (or a top-level key) on cfg after checking it."""
    parts = key.split(".")
    if len(parts) == 1 and parts[0] in {f.name for f in dataclasses.fields(Config)} and parts[0] not in _SECTIONS:
        target, name = cfg, parts[0]
    elif len(parts) == 2 and parts[0] in _SECTIONS:
        target, name = getattr(cfg, parts[0]), parts[1]
    else:
        allowed = ", ".join(list(_SECTIONS) + [f.name for f in dataclasses.fields(Config) if f.name not in _SECTIONS])
        raise ConfigError(f"unknown key {key!r}; expected <section>.<key> with section one of {allowed}")
    fields = {f.name: f for f in dataclasses.fields(target)}
    if name not in fields:
        raise ConfigError(f"unknown key {key!r}; {parts[0] if len(parts) == 2 else 'top level'} "
                          f"has: {', '.join(fields)}")
    setattr(target, name, _check_value(key, fields[name], value))


def _flatten(raw, source):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must hold a mapping of sections, got {type(raw).__name__}")
    for k, v in raw.items():
        if k in _SECTIONS:
            if not isinstance(v, dict):
                raise ConfigError(f"section {k!r} in {source} must be a mapping, got {shown(v)}")
            for kk, vv in v.items():
                yield f"{k}.{kk}", vv
        else:
            yield str(k), v


def parse_override(text):
    """'train.lr=0.1' -> ('train.lr', 0.1). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {shown(text)} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = bounded_yaml.parse(raw, f"--set {key.strip()}") if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path=None, overrides=()):
    """Load a YAML config file (or the defaults), apply `section.key=value` overrides, validate.

    Raises ConfigError (one line) on unknown keys, wrong types, out-of-range values.
    """
    cfg = _read(path)
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        _apply(cfg, key, value)
    check(cfg)  # config_checks: constraints between keys, TF_CONFIG, batch size
    memory_checks.check(cfg)  # the model and its input against the RAM
    return cfg


def _read(path):
    """The defaults with the values of the YAML file `path` (if not None), each checked on its own."""
    cfg = Config()
    if path is not None:
        text = read_user_file(path, "config", "config file ", ConfigError)  # a regular file of <= 1 MB, or one line
        try:
            raw = bounded_yaml.parse(text.decode("utf-8"), path) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path} is not a text file (byte {e.start} is not UTF-8); expected a YAML file") from None
        for key, value in _flatten(raw, path):
            _apply(cfg, key, value)
    return cfg


def changes(cfg, path):
    """[(key, value in the config file `path` (the defaults if None), value in `cfg`)] for every key
    whose values differ, in the config's order: what `--set` changed."""
    def flat(c):
        return dict(_flatten(c.to_dict(), "config"))
    base = flat(_read(path))
    return [(key, base[key], value) for key, value in flat(cfg).items() if value != base[key]]


def from_dict(raw, overrides=()):
    """Rebuild a Config from `Config.to_dict()` output (e.g. a run's saved config.yaml), then apply overrides."""
    return load_config(None, list(_flatten(raw, "dict")) + list(overrides))


def dump(cfg, path):
    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)


def reference_markdown():
    """The configuration reference table in docs/configuration.md (`python -m alexnet_tf config-reference`)."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    sections = [("", Config)] + list(_SECTIONS.items())
    for section, cls in sections:
        for f in dataclasses.fields(cls):
            if f.name in _SECTIONS:
                continue
            key = f"{section}.{f.name}" if section else f.name
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            rows.append(f"| `{key}` | `{yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip()}` "
                        f"| {_describe(f)} | {f.metadata['doc']} |")
    return "\n".join(rows)
