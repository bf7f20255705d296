"""Compile the fused LRN op (lrn_op.cc) against the installed TensorFlow: `make setup` runs

    python -m alexnet_tf.ops.build [--force]

The library lands in alexnet_tf/ops/_build/ (git-ignored) with a stamp naming the TensorFlow
version and the source's digest it was built from; it is rebuilt when either changes. Flags: -O3
and TensorFlow's own compile flags (tf.sysconfig), no -march: the kernel's entry points are compiled
for x86-64-v4 (AVX-512), v3 (AVX2+FMA) and baseline x86-64 by GCC's target_clones and picked at load
time by the CPU, so a library built on one machine runs on any other x86-64. With no C++ compiler,
or a failed build, it prints one line and exits 0: set-up goes on, and training uses the pure-TF LRN.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys

from alexnet_tf import tf_startup

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "lrn_op.cc")
BUILD_DIR = os.path.join(HERE, "_build")
LIBRARY = os.path.join(BUILD_DIR, "lrn_op.so")
STAMP = LIBRARY + ".stamp"
# -fno-math-errno: sqrt may then be vectorised (errno is never read here)
FLAGS = ["-shared", "-fPIC", "-O3", "-fno-math-errno", "-Wno-deprecated-declarations"]


def stamp_text():
    """What the library must have been built from: this TensorFlow and this source."""
    import tensorflow as tf

    with open(SOURCE, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return f"tensorflow {tf.__version__}\nsource {digest}\n"


def up_to_date():
    try:
        with open(STAMP) as f:
            return os.path.exists(LIBRARY) and f.read() == stamp_text()
    except OSError:
        return False


def compiler():
    """$CXX, else the first of g++, c++, clang++ on the PATH; None without one."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((shutil.which(n) for n in names if shutil.which(n)), None)


def build(force=False):
    """Build the library if it is missing or stale. Returns (path or None, one line saying what happened)."""
    if not force and up_to_date():
        return LIBRARY, f"fused LRN op up to date: {LIBRARY}"
    cxx = compiler()
    fallback = "training uses the pure-TensorFlow LRN (same results, slower)"
    if cxx is None:
        return None, f"note: no C++ compiler (g++, c++, clang++ or $CXX) to build the fused LRN op; {fallback}"
    import tensorflow as tf

    os.makedirs(BUILD_DIR, exist_ok=True)
    partial = f"{LIBRARY}.{os.getpid()}.tmp"
    command = [cxx, *FLAGS, *tf.sysconfig.get_compile_flags(), SOURCE, "-o", partial, *tf.sysconfig.get_link_flags()]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"note: building the fused LRN op failed ({e}); {fallback}"
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines() or ["?"]
        if os.path.exists(partial):
            os.remove(partial)
        return None, f"note: building the fused LRN op failed ({errors[0].strip()}); {fallback}"
    os.replace(partial, LIBRARY)
    with open(STAMP, "w") as f:
        f.write(stamp_text())
    return LIBRARY, f"built the fused LRN op: {LIBRARY}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--force", action="store_true", help="rebuild even when the library is up to date")
    args = p.parse_args(argv)
    tf_startup.start()  # TensorFlow's start-up notices off `make setup`'s console
    print(build(args.force)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
