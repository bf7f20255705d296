"""`python -m alexnet_tf import-caffe`: BVLC Caffe's bvlc_alexnet as a run directory of this project.

    import-caffe --caffemodel bvlc_alexnet.caffemodel [--prototxt deploy.prototxt]
                 [--mean imagenet_mean.binaryproto] [--synset-words synset_words.txt] --run-dir DIR

writes what training writes (run_dir.py), so that evaluate, predict, filters, features,
neighbours and export read it as any run:

    config.yaml    the Caffe conventions (model.image_size 227, lrn_convention caffe,
                   lrn_across_towers true, hidden_bias 0.1; data.source imagenet)
    model.keras    the two-tower model with the Caffe weights; input (B, 227, 227, 3) RGB 0..255 minus the mean
    mean.npy       Caffe's mean image (256, 256, 3) RGB, or its per-channel mean 104/117/123 (BGR)
    classes.json   the classes in Caffe's label order: the ILSVRC-2012 synsets sorted by wnid (TFDS's order)
    data.json      ILSVRC-2012's split sizes, the data the weights were trained on
    caffe.json     where the weights came from: files, sizes, SHA-1, layer format
    export/1/      the TF Serving SavedModel (export.py), JPEG bytes in
"""

import hashlib
import importlib.util
import json
import os
import types

import numpy as np

from alexnet_tf import config as config_lib
from alexnet_tf import run_dir as run_dir_lib
from alexnet_tf.caffe import proto, weights
from alexnet_tf.caffe.proto import CaffeFileError
from alexnet_tf.errors import PathExists
from alexnet_tf.user_files import check_user_file, read_user_file

# Caffe's per-channel ImageNet mean, B, G, R (the mean_value of Caffe's ImageNet examples).
CHANNEL_MEAN_BGR = (104.0, 117.0, 123.0)
MEAN_SIDE = 256          # Caffe's ImageNet images are 256x256 before the 227 crop (data.resize)
# ILSVRC-2012: 1,281,167 training and 50,000 validation images (the data bvlc_alexnet was trained on).
ILSVRC2012_SIZES = dict(train_size=1_281_167, val_size=50_000, test_size=0)


def caffe_config(net, mean_kind, name, overrides=()):
    """The run's Config: this model with bvlc_alexnet's conventions and Caffe's training recipe
    (BVLC/caffe models/bvlc_alexnet/train_val.prototxt, solver.prototxt), then `--set` overrides."""
    overrides = [config_lib.parse_override(o) if isinstance(o, str) else o for o in overrides]
    for key, _ in overrides:
        if key.startswith("model."):  # the weights decide the model
            raise CaffeFileError(f"--set {key} would change the network the Caffe weights are for; expected "
                                 "data.*, train.*, distribute.* or name")
    if net.num_classes != 1000 and "data.source" not in dict(overrides):
        raise CaffeFileError(f"fc8 has {net.num_classes} outputs, not ILSVRC-2012's 1000; expected the data the net "
                             "was trained on, e.g. --set data.source=folder --set data.path=DIR")
    values = {
        "name": name,
        "model.towers": 2, "model.num_classes": net.num_classes, "model.image_size": weights.IMAGE_SIZE,
        "model.channels": 3, "model.geometry": "imagenet", "model.width": net.width, "model.fc_units": net.fc_units,
        "model.lrn_convention": "caffe", "model.lrn_across_towers": True,
        "model.hidden_bias": 0.1,                    # bvlc_alexnet's readme: 1 gave a flat loss
        "data.source": "imagenet", "data.resize": MEAN_SIDE, "data.mean": mean_kind, "data.scale": 1.0,
        "data.lighting": False,                      # the readme: trained without the relighting
        "data.batch_size": 256,                      # train_val.prototxt
        "train.lr": 0.01, "train.momentum": 0.9, "train.weight_decay": 0.0005,
    }
    return config_lib.load_config(None, list(values.items()) + overrides)


def read_mean(path):
    """(mean (256, 256, 3) RGB float32 on the 0..255 scale, data.mean kind) from an
    imagenet_mean.binaryproto (a BlobProto (1, 3, H, W) in BGR), or Caffe's per-channel mean."""
    if path is None:
        rgb = np.array(CHANNEL_MEAN_BGR[::-1], np.float32)
        return np.broadcast_to(rgb, (MEAN_SIDE, MEAN_SIDE, 3)).copy(), "channel"
    blob = proto.read_binaryproto(path)
    shape = tuple(blob.shape)
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or shape[0] != 3 or min(shape[1:]) < weights.IMAGE_SIZE:
        raise CaffeFileError(f"{path}: the mean blob has shape {tuple(blob.shape)}; expected (1, 3, H, W) with "
                             f"H, W >= {weights.IMAGE_SIZE} (BGR; imagenet_mean.binaryproto is 1x3x256x256)")
    bgr = np.asarray(blob.data, np.float32).reshape(shape)             # (3, H, W), B G R
    return np.ascontiguousarray(bgr.transpose(1, 2, 0)[:, :, ::-1]), "image"


def ilsvrc2012_wnids():
    """The 1000 ILSVRC-2012 wnids in sorted order (Caffe's synsets.txt and TFDS imagenet2012's labels),
    from tensorflow-datasets' labels.txt (found without importing the package), or None."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, "datasets", "imagenet2012", "labels.txt")
        if os.path.isfile(path):
            with open(path) as f:
                return [line.strip() for line in f if line.strip()]
    return None


def class_names(num_classes, synset_words=None):
    """classes.json: one name per fc8 output, in label order.

    With synset_words.txt (Caffe's data/ilsvrc12, lines "n01440764 tench, Tinca tinca"): each
    synset's first name, with its wnid added where two synsets share it ("crane (n02012849)").
    Without it: the wnids themselves, which the folder source's class folders (val/n01440764/) match.
    """
    expected = ilsvrc2012_wnids() if num_classes == 1000 else None
    if synset_words is None:
        if expected is None:
            raise CaffeFileError(f"fc8 has {num_classes} outputs; give --synset-words with one line per class "
                                 "(\"<id> <name>\", in label order)" if num_classes != 1000 else
                                 "the ILSVRC-2012 wnids need tensorflow-datasets (its imagenet2012 labels.txt); "
                                 "expected it installed, or --synset-words synset_words.txt")
        return list(expected)
    try:
        text = read_user_file(synset_words, "words", "--synset-words ", CaffeFileError).decode("utf-8")
    except UnicodeDecodeError as e:
        raise CaffeFileError(f"--synset-words {synset_words} is not a text file (byte {e.start} is not UTF-8); "
                             "expected a text file such as Caffe's synset_words.txt") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != num_classes:
        raise CaffeFileError(f"{synset_words} has {len(lines)} lines; expected {num_classes}, one per fc8 output")
    ids = [line.split(None, 1)[0] for line in lines]
    if expected is not None and ids != expected:
        i = next(i for i, (a, b) in enumerate(zip(ids, expected)) if a != b)
        raise CaffeFileError(f"{synset_words} line {i + 1} is {ids[i]}; expected {expected[i]} there (Caffe's and "
                             "TFDS's label order: the 1000 ILSVRC-2012 wnids sorted)")
    first = [(line.split(None, 1)[1] if " " in line or "\t" in line else line).split(",")[0].strip() for line in lines]
    counts = {n: first.count(n) for n in first}
    return [n if counts[n] == 1 else f"{n} ({wnid})" for n, wnid in zip(first, ids)]


def _sha1(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def import_caffe(caffemodel, run_dir, prototxt=None, mean=None, synset_words=None, overrides=(), export=True):
    """Write the run directory for a bvlc_alexnet-shaped caffemodel (module docstring); returns its Config.

    `overrides`: `section.key=value` changes to the config written (e.g. data.path), as `--set`.

    Raises CaffeFileError (one line) for a file that is not Caffe's, is truncated or is not AlexNet,
    and PathExists (a FileExistsError) for a run directory that already holds a run.
    """
    for path in (run_dir_lib.CONFIG, run_dir_lib.MODEL):
        if os.path.exists(os.path.join(run_dir, path)):
            raise PathExists(f"{os.path.join(run_dir, path)} exists: {run_dir} already holds a run; "
                                  "expected a new or empty --run-dir")
    # === Read and check everything before writing anything ===
    for path, kind, label in ((caffemodel, "caffemodel", "--caffemodel "), (prototxt, "prototxt", "--prototxt "),
                              (mean, "mean", "--mean "), (synset_words, "words", "--synset-words ")):
        if path is not None:  # each named file is a regular file within its limit before any is read
            check_user_file(path, kind, label, CaffeFileError)
    net = proto.read_caffemodel(caffemodel)
    structure = proto.read_prototxt(prototxt) if prototxt else net
    alexnet = weights.check_alexnet(structure, net)
    mean_image, mean_kind = read_mean(mean)
    name = os.path.splitext(os.path.basename(caffemodel))[0] or "caffe"
    config = caffe_config(alexnet, mean_kind, name, overrides)
    names = class_names(alexnet.num_classes, synset_words)

    # === Model ===
    import keras

    from alexnet_tf.model import build_model
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")  # the weights are float32; so is every tool's model
    try:
        model = build_model(config)
        weights.load_into(model, alexnet)
    finally:
        keras.mixed_precision.set_global_policy(policy)

    # === Run directory ===
    with run_dir_lib.lock(run_dir):
        run_dir_lib.write_config(config, run_dir)
        data = types.SimpleNamespace(mean=mean_image, class_names=names, stats_file="", skipped=(), **ILSVRC2012_SIZES)
        run_dir_lib.write_data(run_dir, data)   # mean.npy, classes.json, data.json
        files = {"caffemodel": caffemodel, "prototxt": prototxt, "mean": mean, "synset_words": synset_words}
        record = {key: None if path is None else {"path": os.path.abspath(path), "bytes": os.path.getsize(path),
                                                  "sha1": _sha1(path)} for key, path in files.items()}
        record.update(net_name=net.name, layer_format=net.format, caffe_layers=alexnet.names,
                      mean_subtracted="the mean image" if mean else "Caffe's per-channel mean 104, 117, 123 (BGR)")
        with open(os.path.join(run_dir, "caffe.json"), "w") as f:
            json.dump(record, f, indent=1)
        model.save(os.path.join(run_dir, run_dir_lib.MODEL))
    if export:
        from alexnet_tf.export import export_run
        export_run(run_dir, version=1)
    return config


def add_arguments(parser):
    """The `import-caffe` command's arguments."""
    parser.add_argument("--caffemodel", required=True, help="e.g. bvlc_alexnet.caffemodel (either layer format)")
    parser.add_argument("--prototxt",
                        help="net definition, e.g. deploy.prototxt (default: the one inside the caffemodel)")
    parser.add_argument("--mean",
                        help="imagenet_mean.binaryproto (default: Caffe's per-channel mean 104, 117, 123 BGR)")
    parser.add_argument("--synset-words", help="synset_words.txt: class names for classes.json (default: the wnids)")
    parser.add_argument("--run-dir", required=True, help="the run directory to create")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="change the config written, e.g. data.path (data.source for a net of other classes); "
                             "repeatable")


def main(args):
    """`python -m alexnet_tf import-caffe`: a caffemodel as a run directory, with its SavedModel."""
    config = import_caffe(args.caffemodel, args.run_dir, args.prototxt, args.mean, args.synset_words, args.set)
    m = config.model
    print(f"imported {args.caffemodel} into {args.run_dir}: {m.num_classes} classes, width {m.width:g}, "
          f"fc {m.fc_units}; mean {config.data.mean}; SavedModel in {run_dir_lib.export_dir(args.run_dir)}/1")
    print(f"  python -m alexnet_tf evaluate --run-dir {args.run_dir}      # ILSVRC-2012 val (data.source imagenet)")
    print(f"  python -m alexnet_tf filters --run-dir {args.run_dir} --out fig3.png")
