"""Reading a run directory back: its config, a model (the final one or a checkpoint), mean image, class names.

`training.train` writes the run directory; export, prediction and retrieval read it through
`load_run` so that they all see the same model and the same preprocessing constants.
"""

import json
import os
from dataclasses import dataclass

import numpy as np

from alexnet_tf.config import load_config


@dataclass
class Run:
    run_dir: str
    config: object              # the run's resolved Config (config.yaml)
    model: object               # keras.Model, images -> logits
    mean: np.ndarray            # the mean image subtracted in training, (H, W, C) on the 0..255 scale
    class_names: tuple          # in label order
    source: str                 # the file the weights came from (model.keras or a checkpoint prefix)


class RunDirError(FileNotFoundError):
    """The run directory lacks a file a tool needs; the one-line message names it."""


def _require(path, what):
    if not os.path.exists(path):
        raise RunDirError(f"{path} not found; expected {what} (train.py writes it)")
    return path


def resolve_checkpoint(run_dir, checkpoint):
    """'last' / 'best' -> the newest checkpoint prefix in checkpoints/<name>; a path is returned as given."""
    import tensorflow as tf

    if checkpoint in ("last", "best"):
        directory = _require(os.path.join(run_dir, "checkpoints", checkpoint), f"the {checkpoint!r} checkpoint directory")
        prefix = tf.train.latest_checkpoint(directory)
        if prefix is None:
            raise RunDirError(f"{directory} holds no checkpoint; expected one written during training")
        return prefix
    if not tf.io.gfile.exists(checkpoint + ".index"):
        raise RunDirError(f"checkpoint {checkpoint!r} not found (no {checkpoint}.index); "
                          "expected 'last', 'best' or a checkpoint prefix such as RUN/checkpoints/best/ckpt-3")
    return checkpoint


def load_run(run_dir, checkpoint=None):
    """The model of a run directory with what is needed to preprocess its inputs.

    checkpoint: None = model.keras (the final model; falls back to checkpoints/last while a run
    is still training), 'last', 'best', or a checkpoint prefix.
    """
    import keras
    import tensorflow as tf

    from alexnet_tf import layers, training  # noqa: F401  (registers the custom classes for load_model)
    from alexnet_tf.model import build_model

    config = load_config(_require(os.path.join(run_dir, "config.yaml"), "the run's config.yaml"))
    mean = np.load(_require(os.path.join(run_dir, "mean.npy"), "the mean image mean.npy"))
    with open(_require(os.path.join(run_dir, "classes.json"), "the class names classes.json")) as f:
        class_names = tuple(json.load(f))
    final = os.path.join(run_dir, "model.keras")
    if checkpoint is None and os.path.isfile(final):
        model, source = keras.saving.load_model(final, compile=False), final
    else:
        source = resolve_checkpoint(run_dir, checkpoint or "last")
        model = build_model(config)
        # The training checkpoint also holds the optimizer and schedule state, which are not needed here.
        tf.train.Checkpoint(model=model).restore(source).expect_partial().assert_existing_objects_matched()
    return Run(run_dir, config, model, mean, class_names, source)
