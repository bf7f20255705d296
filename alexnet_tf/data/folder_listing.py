"""The folder source's listing: which entries of data.path/{train,val}/<class>/ are image files to read.

Every entry goes through user_files' rule (`examine`, the "image" size limit) without being opened:
- not a regular file (a symbolic link loop, a dangling link, a FIFO, a socket, a device, a directory,
  also one named x.jpg): skipped and counted;
- above user_files.LIMITS["image"] (64 MiB): skipped and counted, never read or decoded;
- a symbolic link, the file's own or its class folder's, that resolves outside the dataset root
  (data.path): refused with one line per file (per class folder), unless data.follow_symlinks_outside,
  for a dataset that is a tree of links into another place.
Each split gets one summary line with the count per reason and a few examples, and the skipped entries
are recorded with the undecodable files in the run's data.json. Nothing here starts TensorFlow.
"""

import os
import sys
from dataclasses import dataclass, field

from alexnet_tf.data.errors import DatasetNotFound
from alexnet_tf.user_files import LIMITS, examine

EXAMPLES = 3          # entries named in a split's summary line
OUTSIDE = "outside the dataset root"
FOLLOW_KEY = "data.follow_symlinks_outside: true"


@dataclass
class Listing:
    paths: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    signature: list = field(default_factory=list)   # (name, size, mtime) per file: the split's identity
    refused: list = field(default_factory=list)     # {"key", "name", "reason"}, as the pre-scan's skipped files


def is_dir(entry):
    """DirEntry.is_dir() that says False for a symbolic link loop (it raises ELOOP)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def inside(path, root_real):
    """Whether `path` resolves to a place under `root_real` (a realpath)."""
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


def _refuse_outside(listing, path, what):
    reason = f"{what} resolves to {os.path.realpath(path)}, {OUTSIDE}"
    print(f"warning: skipping {path}: {reason} (set {FOLLOW_KEY} to read it)", file=sys.stderr)
    listing.refused.append(dict(key=path, name=path, reason=reason))


def _add_class(listing, folder, label, root_real, follow_outside):
    """The files of one class folder into `listing` (the rule in the module docstring)."""
    limit = LIMITS["image"].limit
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:  # no permission to list it
        listing.refused.append(dict(key=folder, name=folder, reason=e.strerror or str(e)))
        return
    for f in entries:
        why, st = examine(f.path)
        if why is None and st.st_size > limit:
            why = f"larger than the {limit:,}-byte image limit"
        if why is not None:
            listing.refused.append(dict(key=f.path, name=f.path, reason=why))
        elif not follow_outside and f.is_symlink() and not inside(f.path, root_real):
            _refuse_outside(listing, f.path, "a symbolic link that")
        else:
            listing.paths.append(f.path)
            listing.labels.append(label)
            listing.signature.append((f.name, st.st_size, st.st_mtime_ns))


def summary(refused, top):
    """The one line that counts a split's skipped entries by reason, or None if there are none."""
    if not refused:
        return None
    counts = {}
    for r in refused:
        kind = OUTSIDE if OUTSIDE in r["reason"] else r["reason"]
        counts[kind] = counts.get(kind, 0) + 1
    examples = ", ".join(f"{r['name']} ({r['reason']})" for r in refused[:EXAMPLES])
    return (f"warning: skipped {len(refused)} entries of {top} that are not image files to read "
            f"({', '.join(f'{k}: {n}' for k, n in counts.items())}), e.g. {examples}"
            f"{' ...' if len(refused) > EXAMPLES else ''}")


def list_split(top, index, root_real, follow_outside, training):
    """The Listing of data.path/<split> (`top`) for the classes `index` ({name: label})."""
    if not follow_outside and not inside(top, root_real):
        raise DatasetNotFound(f"{top} resolves to {os.path.realpath(top)}, {OUTSIDE} {root_real}; expected the "
                              f"split folder inside it, or set {FOLLOW_KEY}")
    listing, stray = Listing(), 0
    for entry in sorted(os.scandir(top), key=lambda e: e.name):
        if not is_dir(entry):
            stray += 1
            continue
        if entry.name not in index:
            raise DatasetNotFound(f"class folder {entry.path} is not one of the {len(index)} training classes "
                                  f"(from {os.path.join(os.path.dirname(top), 'train')}); expected the same class "
                                  "folders in train/ and val/")
        before = len(listing.paths)
        if not follow_outside and not inside(entry.path, root_real):
            _refuse_outside(listing, entry.path, "the class folder")
        else:
            _add_class(listing, entry.path, index[entry.name], root_real, follow_outside)
        if training and len(listing.paths) == before:  # the model keeps an output it never learns
            print(f"warning: training class folder {entry.path} holds no files: class {index[entry.name]} "
                  f"({entry.name!r}) is never trained", file=sys.stderr)
    if stray:
        print(f"warning: ignoring {stray} files directly in {top} (images belong in {top}/<class>/)", file=sys.stderr)
    line = summary(listing.refused, top)
    if line:
        print(line, file=sys.stderr)
    return listing
