"""`alexnet-tf prepare`: the paper's make-data step, run once. Every image of a file source's training and
validation split is decoded, rescaled to its §2 central square (`decode.load_image`, the training
decoder) and stored as JPEG in TFRecord shards (prepared.py describes the directory), while the mean
image and the RGB covariance of the training squares are summed in the same pass.

Decoding runs in parallel inside tf.data (AUTOTUNE: every core); this process only writes the records
and adds up the sums. A shard is written under shards/ and moved into place when complete, then its
record (size, SHA-256, undecodable files, exact integer stat sums) is written: a rerun skips the shards
whose record matches their file and writes the others again, to the same bytes (JPEG encoding is
deterministic and the shards' contents are fixed by the plan).
"""

import hashlib
import itertools
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

from alexnet_tf import provenance
from alexnet_tf.data import decode, prepared, sources
from alexnet_tf.data import stats as stats_lib
from alexnet_tf.errors import ConfigError, PathExists

# The training split is written in a fixed random order: a folder lists its files class by class, and
# shards cut from that order would each hold one or two classes. Mixed shards keep batches mixed when a
# reader shuffles only shard order and a buffer (TFDS's shuffle_files), or reads a subset of the shards
# (one worker's). TFDS datasets are read in their own order, already shuffled when TFDS wrote them.
ORDER_SEED = 0
FORMAT = 1
READS = ("imagenet", "folder", "tfds")  # the sources prepare reads


def prepare(config, out, quality=95, subsampling="444", shard_images=1024, command=""):
    """Write (or finish) the prepared copy of `config`'s file source in `out`; returns the record (prepare.json)."""
    if config.data.source not in READS:
        raise ConfigError(f"data.source = {config.data.source}; prepare reads the file sources {', '.join(READS)}")
    out = os.path.abspath(os.path.expanduser(out))
    started = time.time()
    train, val, names = sources.load(config)
    splits = {"train": train, "val": val}
    plan = make_plan(config, splits, names, quality, subsampling, shard_images)
    claim(out, plan)
    pending = {role: [i for i in range(shard_count(plan, role)) if finished(out, plan, role, i) is None]
               for role in prepared.SPLITS}
    done = sum(shard_count(plan, r) - len(pending[r]) for r in prepared.SPLITS)
    if done:
        print(f"{done} complete shards found in {out} (size and SHA-256 checked): skipping them", flush=True)
    bar = _Progress(sum(len(_positions(plan, r, i)) for r in prepared.SPLITS for i in pending[r]))
    for role in prepared.SPLITS:
        if pending[role]:
            write_split(out, plan, role, splits[role], pending[role], bar)
    return finish(out, plan, command, time.time() - started)


def make_plan(config, splits, names, quality, subsampling, shard_images):
    """Everything the shards' contents depend on; a rerun into the same directory must have the same plan."""
    d = config.data
    where = {k: getattr(d, k) for k in ("source", "path", "tfds_name", "tfds_data_dir", "tfds_val_split", "manual_dir")}
    where["path"] = os.path.abspath(os.path.expanduser(d.path)) if d.path else ""
    return {"format": FORMAT, "source": where, "identity": {r: s.identity for r, s in splits.items()},
            "source_splits": {r: getattr(s, "split", r) for r, s in splits.items()},
            "sizes": {r: s.size for r, s in splits.items()}, "class_names": list(names), "resize": d.resize,
            "quality": quality, "subsampling": subsampling, "shard_images": shard_images,
            "order": {r: "shuffled" if r == "train" and isinstance(s, sources.FolderSplit) else "listing"
                      for r, s in splits.items()}, "order_seed": ORDER_SEED}


# How a plan's keys read in the message that refuses a resume with another plan.
_PLAN_NAMES = {"source": "data.source settings", "identity": "the source's files (names, sizes, times)",
               "source_splits": "source splits", "sizes": "image counts", "class_names": "classes",
               "resize": "data.resize", "shard_images": "shard-images", "order": "write order",
               "order_seed": "write order"}


def claim(out, plan):
    """Start `out` with this plan, or check that the plan it was started with is this one."""
    path = os.path.join(out, prepared.SHARDS, "plan.json")
    if os.path.isfile(path):
        with open(path) as f:
            before = json.load(f)
        differ = [_PLAN_NAMES.get(k, k) for k in plan if before.get(k) != plan[k]]
        if differ:
            raise PathExists(f"{out} holds a prepare of other data or settings ({', '.join(differ)} differ); "
                             "expected the same source and flags to resume it, or a new --out directory")
        return
    if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
        raise PathExists(f"{out} exists and is not a prepare in progress; expected a new or empty --out directory")
    os.makedirs(os.path.join(out, prepared.SHARDS), exist_ok=True)
    _write_json(path, plan)


def shard_count(plan, role):
    return -(-plan["sizes"][role] // plan["shard_images"])


def _positions(plan, role, index):
    """The positions (in the split's write order) that shard `index` holds, before undecodable ones drop out."""
    size = plan["shard_images"]
    return range(index * size, min((index + 1) * size, plan["sizes"][role]))


def _shard_path(out, plan, role, index, suffix=""):
    name = prepared.shard_name(role, index, shard_count(plan, role))
    return os.path.join(out, prepared.SHARDS, name + suffix) if suffix else os.path.join(out, name)


def finished(out, plan, role, index):
    """The record of a complete shard whose file matches it (size, SHA-256), else None."""
    record_path = _shard_path(out, plan, role, index, ".json")
    path = _shard_path(out, plan, role, index)
    if not (os.path.isfile(record_path) and os.path.isfile(path)):
        return None
    record = _shard_record(out, plan, role, index)
    if os.path.getsize(path) != record["bytes"] or _sha256(path) != record["sha256"]:
        return None
    if role == "train" and not os.path.isfile(_shard_path(out, plan, role, index, ".npz")):
        return None
    return record


def _shard_record(out, plan, role, index):
    with open(_shard_path(out, plan, role, index, ".json")) as f:
        return json.load(f)


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# === Reading the source in write order ===

def elements(split, plan, role, positions, root):
    """tf.data of (position, encoded bytes, label, file name) for `positions` (sorted) of the write order."""
    positions = np.asarray(positions, np.int64)
    if isinstance(split, sources.FolderSplit):
        paths, labels, names = _folder_files(split, plan, role, positions, root)
        ds = tf.data.Dataset.from_tensor_slices((positions, paths, labels, names))
        return ds.map(lambda i, path, y, name: (i, tf.io.read_file(path), y, name), num_parallel_calls=tf.data.AUTOTUNE)
    return _tfds_elements(split, plan, positions)


def _folder_files(split, plan, role, positions, root):
    """(paths, labels, names relative to the folder's root) at `positions` of a folder split's write order."""
    order = np.arange(split.size)
    if plan["order"][role] == "shuffled":
        order = np.random.default_rng(plan["order_seed"]).permutation(split.size)
    pick = order[positions]
    return split.paths[pick].astype(str), split.labels[pick], [os.path.relpath(p, root) for p in split.paths[pick]]


def _tfds_elements(split, plan, positions):
    import tensorflow_datasets as tfds

    start, stop = int(positions[0]), int(positions[-1]) + 1
    # one file at a time (no interleave): the n-th record read is the split's n-th record, also for a slice
    records = split.builder.as_dataset(
        split=f"{split.split}[{start}:{stop}]", shuffle_files=False,
        read_config=tfds.ReadConfig(add_tfds_id=True, interleave_cycle_length=1),
        decoders={split.image_key: tfds.decode.SkipDecoding()})
    shards = tf.constant(np.unique(positions // plan["shard_images"]))
    return (records.enumerate(start)
            .filter(lambda i, r: tf.reduce_any(tf.equal(i // plan["shard_images"], shards)))
            .map(lambda i, r: (i, r[split.image_key], tf.cast(r[split.label_key], tf.int32), r[split.name_key])))


def encoded(ds, plan):
    """(position, JPEG bytes, label, name, §2 square uint8, its RGB sum, its sum of RGB outer products)
    per decodable element, in order; the sums are float64 and exact (integers below 2^53)."""
    def encode(i, data, label, name):
        image = decode.load_image(data, plan["resize"])
        jpeg = tf.io.encode_jpeg(image, quality=plan["quality"], chroma_downsampling=plan["subsampling"] == "420")
        x = tf.cast(tf.reshape(image, [-1, 3]), tf.float64)
        return i, jpeg, label, name, image, tf.reduce_sum(x, 0), tf.matmul(x, x, transpose_a=True)

    return (ds.map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .ignore_errors()  # the undecodable: named afterwards from the positions that are missing
            .prefetch(tf.data.AUTOTUNE))


# === Writing ===

def write_split(out, plan, role, split, pending, bar):
    """Write the `pending` shards of one split, in one tf.data pass over their images."""
    root = plan["source"]["path"]
    positions = [p for i in pending for p in _positions(plan, role, i)]
    stream = encoded(elements(split, plan, role, positions, root), plan).as_numpy_iterator()
    groups = itertools.groupby(stream, key=lambda e: int(e[0]) // plan["shard_images"])
    group = next(groups, None)
    for index in pending:
        items = group[1] if group is not None and group[0] == index else ()
        write_shard(out, plan, role, index, items, bar, lambda missing: _undecodable(split, plan, role, missing, root))
        if items:
            group = next(groups, None)


def write_shard(out, plan, role, index, items, bar, name_missing):
    """One shard: records to a temporary file, the stat sums, then the file moved into place, then its record."""
    tmp = _shard_path(out, plan, role, index, ".tmp")
    sums = _Sums(plan["resize"]) if role == "train" else None
    seen, lengths = set(), 0
    with tf.io.TFRecordWriter(tmp) as writer:
        for i, jpeg, label, name, image, pixel_sum, outer_sum in items:
            writer.write(_example(jpeg, label, name))
            seen.add(int(i))
            lengths += 1
            if sums is not None:
                sums.add(image, pixel_sum, outer_sum)
            bar.add(1)
    missing = [p for p in _positions(plan, role, index) if p not in seen]
    skipped = name_missing(missing) if missing else []
    bar.add(len(missing))
    if sums is not None:
        sums.save(_shard_path(out, plan, role, index, ".npz"))
    path = _shard_path(out, plan, role, index)
    os.replace(tmp, path)
    _write_json(_shard_path(out, plan, role, index, ".json"),
                {"images": lengths, "bytes": os.path.getsize(path), "sha256": _sha256(path), "skipped": skipped})


def _example(jpeg, label, name):
    feature = {prepared.IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
               prepared.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
               prepared.FILE_NAME: tf.train.Feature(bytes_list=tf.train.BytesList(value=[name]))}
    # deterministic: a protobuf map (the features) is otherwise written in an order that depends on the
    # process's string hashing (PYTHONHASHSEED), and a rerun after a kill would write other bytes
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def _undecodable(split, plan, role, missing, root):
    """[{"key", "name", "reason"}] of the elements at `missing` positions, each with one warning line."""
    if isinstance(split, sources.FolderSplit):
        paths, _, names = _folder_files(split, plan, role, np.asarray(missing, np.int64), root)
        found = [(name, _read(path)) for path, name in zip(paths, names)]
    else:
        found = [(name.decode(), data) for _, data, _, name in elements(split, plan, role, missing, root).as_numpy_iterator()]
    out = []
    for name, data in found:
        reason = data if isinstance(data, str) else decode.decode_error(data) or "failed to decode"
        out.append({"key": name, "name": name, "reason": reason})
        print(f"warning: skipping {name}: {reason}", file=sys.stderr, flush=True)
    return out


def _read(path):
    """The file's bytes, or why it cannot be read (a str)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return f"cannot be read: {e.strerror}"


class _Sums:
    """Exact integer sums over one shard's §2 squares: per pixel, per channel, and of RGB outer products."""

    def __init__(self, side):
        self.images, self.image_sum = 0, np.zeros((side, side, 3), np.int64)
        self.pixel_sum, self.outer_sum = np.zeros(3, np.int64), np.zeros((3, 3), np.int64)

    def add(self, image, pixel_sum, outer_sum):
        self.images += 1
        self.image_sum += image
        self.pixel_sum += pixel_sum.astype(np.int64)
        self.outer_sum += outer_sum.astype(np.int64)

    def save(self, path):
        # uint32 holds a shard's per-pixel sums (< 2^32 / 255 images per shard); compressed, ~0.3 MB at 256x256
        np.savez_compressed(path + ".tmp.npz", images=self.images, image_sum=self.image_sum.astype(np.uint32),
                            pixel_sum=self.pixel_sum, outer_sum=self.outer_sum)
        os.replace(path + ".tmp.npz", path)


class _Progress:
    """keras's Progbar (bar, ETA) with the images/s since the start."""

    def __init__(self, total):
        from keras.utils import Progbar

        # a redraw every half second: a log file of a days-long run keeps a readable size
        self.bar = Progbar(total, unit_name="image", stateful_metrics=["images/s"], interval=0.5) if total else None
        self.count, self.started = 0, time.perf_counter()

    def add(self, n):
        if self.bar is not None and n:
            self.count += n
            rate = self.count / max(time.perf_counter() - self.started, 1e-9)
            self.bar.add(n, values=[("images/s", rate)])


# === Finishing: the stats, TFDS's metadata, the record ===

def finish(out, plan, command, seconds):
    """stats.npz from the training shards' sums, TFDS's metadata, and prepare.json (written last)."""
    import tensorflow_datasets as tfds

    records = {r: [_shard_record(out, plan, r, i) for i in range(shard_count(plan, r))] for r in prepared.SPLITS}
    stats = _combined_stats([_shard_path(out, plan, "train", i, ".npz") for i in range(shard_count(plan, "train"))])
    stats_lib.save(stats, os.path.join(out, prepared.STATS))
    infos = [tfds.core.SplitInfo(name=r, shard_lengths=[s["images"] for s in records[r]],
                                 num_bytes=sum(s["bytes"] for s in records[r])) for r in prepared.SPLITS]
    tfds.folder_dataset.write_metadata(
        data_dir=out, features=prepared.features(plan["class_names"], plan["resize"]), split_infos=infos,
        check_data=False, supervised_keys=(prepared.IMAGE, prepared.LABEL),
        description=f"§2 central {plan['resize']}x{plan['resize']} squares as JPEG (alexnet-tf prepare)")
    record = {"command": command, "versions": provenance.versions(), "seconds": round(seconds, 1),
              "source": plan["source"], "class_names": plan["class_names"], "resize": plan["resize"],
              "quality": plan["quality"], "subsampling": plan["subsampling"], "stats": prepared.STATS,
              "splits": {r: _split_record(plan, r, records[r]) for r in prepared.SPLITS}}
    _write_json(os.path.join(out, prepared.RECORD), record)
    return record


def _split_record(plan, role, records):
    skipped = [s for r in records for s in r["skipped"]]
    return {"source_split": plan["source_splits"][role], "read": plan["sizes"][role],
            "images": sum(r["images"] for r in records), "skipped": skipped, "shards": len(records),
            "order": plan["order"][role] + (f" (seed {plan['order_seed']})" if plan["order"][role] == "shuffled" else "")}


def _combined_stats(paths):
    totals = None
    for path in paths:
        with np.load(path) as f:
            part = [f["images"], f["image_sum"].astype(np.int64), f["pixel_sum"], f["outer_sum"]]
        totals = part if totals is None else [a + b for a, b in zip(totals, part)]
    return stats_lib.Accumulator.from_sums(*totals).result()


def _write_json(path, value):
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)
