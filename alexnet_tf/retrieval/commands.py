"""The retrieval commands of `python -m alexnet_tf`: features, neighbours, projector, codes.

The retrieval modules other than search.py start TensorFlow, and so does serving: each handler imports
what it uses, so that the commands' --help and argument errors start none.
"""

import json
import os

import numpy as np

from alexnet_tf.arguments import add_run_arguments
from alexnet_tf.retrieval.search import hamming_nearest, nearest, pack_bits
from alexnet_tf.run_dir import load_run
from alexnet_tf.user_files import check_user_file, read_user_file


def _add_batch_arguments(parser):
    """--batch-size and --max-images: how the vectors of a split are extracted (every retrieval command)."""
    parser.add_argument("--batch-size", type=int, metavar="N", default=256, help="images per batch through the model")
    parser.add_argument("--max-images", type=int, metavar="N",
                        help="use at most N images of each split, drawn at random (default: all of an in-memory "
                             "dataset, 20,000 of an image-file source)")


def _load(args):
    from alexnet_tf.serving import Classifier

    run = load_run(args.run_dir, args.checkpoint)
    return run, Classifier.from_run(run)


def add_features_arguments(parser):
    """The `features` command's arguments."""
    add_run_arguments(parser)
    parser.add_argument("--split", nargs="+", default=["train", "val"], choices=("train", "val"),
                        help="the splits whose vectors are extracted (default: both)")
    _add_batch_arguments(parser)


def features_command(args):
    """`python -m alexnet_tf features`: extract and cache the last hidden layer's vectors of the splits."""
    from alexnet_tf.retrieval.features import FEATURE_LAYER, cached_features

    run, classifier = _load(args)
    for split in args.split:
        features, _, _ = cached_features(run, classifier, split, args.batch_size, max_images=args.max_images)
        print(f"{split}: {features.shape[0]} x {features.shape[1]} {FEATURE_LAYER} vectors in "
              f"{os.path.join(args.run_dir, 'features', split + '.npy')}")


def add_neighbours_arguments(parser):
    """The `neighbours` command's arguments."""
    add_run_arguments(parser)
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="query image files (default: --queries random validation images)")
    parser.add_argument("--queries", type=int, default=5, metavar="N",
                        help="random validation images as queries, when no image files are given")
    parser.add_argument("--k", type=int, default=6, help="neighbours per query (the paper shows 6)")
    parser.add_argument("--encoder", help="rank by Hamming distance of this §7 encoder's codes (from `codes`)")
    parser.add_argument("--out", required=True, metavar="PNG", help="the PNG panel to write")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="which random validation images --queries draws")
    _add_batch_arguments(parser)


def neighbours_command(args):
    """`python -m alexnet_tf neighbours`: the nearest training images of query images as a PNG panel."""
    import keras

    from alexnet_tf.figures import neighbours_panel
    from alexnet_tf.predict import true_label_from_path
    from alexnet_tf.retrieval.codes import binary_codes
    from alexnet_tf.retrieval.features import FEATURE_LAYER, cached_features, features_of_bytes
    from alexnet_tf.serving import decode_image

    for path in args.images:  # every file named refused before the model loads and any is read
        check_user_file(path, "image")
    if args.encoder:
        check_user_file(args.encoder, "model", "--encoder ")
    run, classifier = _load(args)
    train_features, train_labels, train_images = cached_features(run, classifier, "train", args.batch_size, max_images=args.max_images)
    names = run.class_names
    if args.images:
        blobs = [read_user_file(path, "image") for path in args.images]
        queries = features_of_bytes(classifier, blobs)
        query_images = [decode_image(b, classifier.channels, min_side=classifier.resize_size).numpy() for b in blobs]
        query_names = [os.path.basename(p) for p in args.images]
        query_labels = [true_label_from_path(p, names) for p in args.images]  # the folder, when named after a class
    else:
        val_features, val_labels, val_images = cached_features(run, classifier, "val", args.batch_size, max_images=args.max_images)
        chosen = np.sort(np.random.default_rng(args.seed).choice(len(val_images), args.queries, replace=False))
        queries, query_images = val_features[chosen], list(val_images[chosen])
        query_names, query_labels = None, [names[val_labels[i]] for i in chosen]
    if args.encoder:
        encoder = keras.saving.load_model(args.encoder)
        database = binary_codes(encoder, train_features)
        idx, _ = hamming_nearest(pack_bits(binary_codes(encoder, queries)), pack_bits(database), args.k)
        distance = f"Hamming distance of {database.shape[1]}-bit codes ({os.path.basename(args.encoder)})"
    else:
        idx, _ = nearest(queries, train_features, args.k)
        distance = f"Euclidean distance of {train_features.shape[1]}-d {FEATURE_LAYER} vectors"
    size = neighbours_panel(query_images, [list(train_images[row]) for row in idx], args.out, distance, query_names,
                            query_labels, [[names[train_labels[j]] for j in row] for row in idx])
    print(f"wrote {args.out} ({size[0]}x{size[1]} px)")


def add_projector_arguments(parser):
    """The `projector` command's arguments."""
    add_run_arguments(parser)
    parser.add_argument("--split", default="train", choices=("train", "val"), help="the split whose vectors are shown")
    parser.add_argument("--count", type=int, default=5000, metavar="N",
                        help="random subset size (the projector runs in the browser)")
    parser.add_argument("--log-dir", metavar="DIR", help="default: RUN_DIR/tb/projector")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="which random subset --count draws")
    _add_batch_arguments(parser)


def projector_command(args):
    """`python -m alexnet_tf projector`: a random subset of a split's vectors for TensorBoard's projector."""
    from alexnet_tf.retrieval.features import cached_features
    from alexnet_tf.retrieval.projector import write_projector

    run, classifier = _load(args)
    features, labels, images = cached_features(run, classifier, args.split, args.batch_size, max_images=args.max_images)
    chosen = np.sort(np.random.default_rng(args.seed).choice(len(features), min(args.count, len(features)), replace=False))
    log_dir = args.log_dir or os.path.join(args.run_dir, "tb", "projector")
    write_projector(log_dir, features[chosen], labels[chosen], run.class_names, images[chosen])
    view = os.path.join(args.run_dir, "tb") if args.log_dir is None else log_dir
    print(f"wrote {len(chosen)} {args.split} vectors to {log_dir}; view them in the PROJECTOR tab of: "
          f"tensorboard --logdir {view}")


def add_codes_arguments(parser):
    """The `codes` command's arguments."""
    add_run_arguments(parser)
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64],
                        help="code lengths in bits: one auto-encoder each")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 10, 100], help="precision@K for these K")
    parser.add_argument("--epochs", type=int, metavar="N", default=10, help="auto-encoder training epochs")
    parser.add_argument("--queries", type=int, metavar="N",
                        help="use the first N validation images as queries (default: all)")
    parser.add_argument("--pixels", action="store_true", help="add Euclidean search on raw pixels as a baseline")
    _add_batch_arguments(parser)


def codes_command(args):
    """`python -m alexnet_tf codes`: §7 binary codes against Euclidean search, into RUN_DIR/retrieval/."""
    from alexnet_tf.retrieval.codes import evaluate_retrieval, markdown_table
    from alexnet_tf.retrieval.features import cached_features

    run, classifier = _load(args)
    train_features, train_labels, train_images = cached_features(run, classifier, "train", args.batch_size, max_images=args.max_images)
    val_features, val_labels, val_images = cached_features(run, classifier, "val", args.batch_size, max_images=args.max_images)
    extra = {}
    if args.pixels:  # Euclidean search on the raw pixels, for scale
        extra["euclidean pixels"] = (train_images.reshape(len(train_images), -1).astype("float32"),
                                     val_images.reshape(len(val_images), -1).astype("float32"))
    out_dir = os.path.join(args.run_dir, "retrieval")
    rows = evaluate_retrieval(train_features, train_labels, val_features, val_labels, args.bits,
                              tuple(args.k), args.queries, args.epochs, extra=extra, out_dir=out_dir)
    table = markdown_table(rows, tuple(args.k))
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"wrote {out_dir}/report.json, report.md and the encoders encoder_<bits>.keras")
