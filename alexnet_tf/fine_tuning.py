"""Fine-tuning (`train.init_from`): the source model loaded safely before a run starts, and its weights
copied onto the new model by layer name and shape."""

import zipfile

import keras

from alexnet_tf import layers  # noqa: F401  (registers the LRN layer for load_model)
from alexnet_tf import run_dir as run_dir_lib
from alexnet_tf.errors import ConfigError, shown


def load_init_model(init_from):
    """(file, model) of `train.init_from` (or (None, None)), loaded in Keras's safe mode before the run
    directory is touched: a file that cannot be loaded safely (a Lambda layer's Python code, an unknown
    layer class, a damaged archive) is refused as the config value it is, in one line, and leaves no
    trace. Loaded whole (not just opened), so damaged weights are found here too."""
    if not init_from:
        return None, None
    path = run_dir_lib.init_weights_file(init_from)
    try:
        return path, keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError, KeyError, AttributeError, ImportError, OSError, zipfile.BadZipFile) as e:
        # the first sentence of Keras's message (the rest of a safe-mode refusal explains how to switch it off)
        first = (str(e).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
        raise ConfigError(f"train.init_from = {shown(init_from)}: {path} cannot be loaded in Keras's safe mode "
                          f"({type(e).__name__}: {first[:200]}{'...' if len(first) > 200 else ''}); expected a "
                          "model.keras written by this project (no layer holding Python code)") from None


def copy_weights(model, source, path):
    """Fine-tuning (`train.init_from`): copy the weights of `source`'s layers (the model of `path`) onto
    this model's layers of the same name and shapes; the others (fc8 for another class count) keep
    their initialisation."""
    source = {layer.name: layer for layer in source.layers}
    copied, kept = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        theirs = source.get(layer.name)
        if theirs is not None and [w.shape for w in theirs.weights] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(theirs.get_weights())
            copied.append(layer.name)
        else:
            kept.append(layer.name)
    if not copied:
        raise ConfigError(f"train.init_from = {path}: no layer of it fits this model (names or shapes "
                          "differ); expected a run of the same model config")
    print(f"weights of {len(copied)} layers from {path}" + (f"; initialised afresh: {', '.join(kept)}" if kept else ""))
