"""`python -m alexnet_tf predict`: top-5 classes of image files and/or random validation images,
optionally as a PNG panel (the paper's Fig. 4 left).

The predictions are predict.py's; this module reads the command line and starts TensorFlow only in the
handler, so that `predict --help` and its argument errors start none.
"""

from alexnet_tf.arguments import add_run_arguments
from alexnet_tf.crops import check_ten_crop
from alexnet_tf.errors import UserError
from alexnet_tf.run_dir import load_run
from alexnet_tf.user_files import check_user_file


def add_arguments(parser):
    """The `predict` command's arguments."""
    add_run_arguments(parser)
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="JPEG/PNG/GIF/BMP files")
    parser.add_argument("--label", action="append", help="true label (name or id) of each image, in order; "
                        "default: the image's folder when it is named after a class")
    parser.add_argument("--val", type=int, default=0, metavar="N", help="also predict N random validation images")
    parser.add_argument("--ten-crop", action="store_true", help="average over the paper's ten patches (§4.1; for runs whose "
                        "images are larger than model.image_size)")
    parser.add_argument("--out", metavar="PNG", help="PNG panel: each image with its top-5 bars, the true label's bar in red")
    parser.add_argument("--cols", type=int, metavar="N", default=4, help="images per row of the --out panel")
    parser.add_argument("--seed", type=int, metavar="N", default=0, help="which random validation images --val draws")


def main(args):
    """`python -m alexnet_tf predict`: top-5 of image files and/or --val N validation images, optionally a PNG panel."""
    from alexnet_tf.predict import ImageFileError, format_predictions, predict_bytes, predict_files, validation_samples
    from alexnet_tf.serving import Classifier

    for path in args.images:  # a missing file, a FIFO or /dev/zero is refused before the model loads
        check_user_file(path, "image", error=ImageFileError)
    if not args.images and not args.val:
        raise UserError("give image files and/or --val N (validation images)")
    run = load_run(args.run_dir, args.checkpoint)
    classifier = Classifier.from_run(run)
    if args.ten_crop:
        check_ten_crop(run.config, classifier.resize_size)
    results = predict_files(classifier, args.images, args.label, args.ten_crop) if args.images else []
    if args.val:
        blobs, names, labels = validation_samples(run, args.val, args.seed)
        results += predict_bytes(classifier, blobs, names, labels, args.ten_crop)
    print(format_predictions(results))
    if args.out:
        from alexnet_tf.figures import prediction_panel
        size = prediction_panel([r.image for r in results], [r.class_names for r in results],
                                [r.probabilities for r in results], args.out, [r.name for r in results],
                                [r.true_label for r in results], cols=args.cols)
        print(f"wrote {args.out} ({size[0]}x{size[1]} px)")
