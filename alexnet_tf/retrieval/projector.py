"""The vectors with labels and sprite thumbnails for TensorBoard's projector tab."""

import os

import numpy as np
import tensorflow as tf

from alexnet_tf.retrieval.features import FEATURE_LAYER

SPRITE_MAX = 8192  # the projector's limit on the sprite image's side, in pixels


def sprite(images):
    """(N, H, W, C) uint8 images -> one square grid (ceil(sqrt(N)) thumbnails a side), uint8 RGB.

    Thumbnails are shrunk when needed to keep the grid within the projector's 8192x8192 limit.
    Returns (grid, (thumb_height, thumb_width)).
    """
    images = np.asarray(images)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    n, h, w, _ = images.shape
    side = int(np.ceil(np.sqrt(n)))
    shrink = min(1.0, SPRITE_MAX / (side * max(h, w)))
    if shrink < 1.0:
        size = [max(1, int(h * shrink)), max(1, int(w * shrink))]
        images = tf.cast(tf.round(tf.image.resize(images, size, antialias=True)), tf.uint8).numpy()
        h, w = size
    grid = np.zeros((side * h, side * w, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, side)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    return grid, (h, w)


def write_projector(log_dir, features, labels, class_names, images):
    """Write vectors, a metadata.tsv (label id and name) and sprite.png for TensorBoard's projector.

    `tensorboard --logdir LOG_DIR` or any parent of it (RUN_DIR/tb, runs/) shows them in the PROJECTOR tab.
    """
    from PIL import Image
    from tensorboard.plugins import projector

    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, "metadata.tsv"), "w") as f:
        f.write("label\tclass\n")
        f.writelines(f"{int(y)}\t{class_names[int(y)]}\n" for y in labels)
    grid, (h, w) = sprite(images)
    Image.fromarray(grid).save(os.path.join(log_dir, "sprite.png"))
    checkpoint = tf.train.Checkpoint(embedding=tf.Variable(np.asarray(features, np.float32), name=FEATURE_LAYER))
    checkpoint.save(os.path.join(log_dir, "embedding.ckpt"))
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    embedding.metadata_path = "metadata.tsv"
    embedding.sprite.image_path = "sprite.png"
    embedding.sprite.single_image_dim.extend([w, h])
    projector.visualize_embeddings(log_dir, config)
    mark_as_run(log_dir)


def mark_as_run(log_dir):
    """Give log_dir an event file (with no summaries) unless it has one.

    TensorBoard's projector reads projector_config.pbtxt from its log directory itself and from each run
    under it, and a run is a directory holding an event file: without one, `tensorboard --logdir runs/`
    never looks into RUN_DIR/tb/projector and shows no PROJECTOR tab.
    """
    if not any("tfevents" in name for name in os.listdir(log_dir)):
        writer = tf.summary.create_file_writer(log_dir)
        writer.flush()
        writer.close()
