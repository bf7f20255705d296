"""The config checks against the machine's RAM, run by `config.load_config` after config_checks.py's: a
model, or an input (a training batch at data.upscale's size, the mean image, synthetic arrays), that cannot
fit stops with one line before TensorFlow starts. Like config.py this module must not import TensorFlow.
"""

import math
import os

from alexnet_tf.architecture import parameter_count
from alexnet_tf.config_checks import FILE_SOURCES
from alexnet_tf.errors import ConfigError

GiB = 2**30

# Bytes a training run holds per model parameter: float32 (4 bytes; the mixed policies keep float32
# variables too) x 4 copies: the weights, PaperSGD's momentum, the gradients and the copy a checkpoint
# write serialises. Activations, the input pipeline and TensorFlow itself come on top, so the estimate is
# a lower bound: a config it rejects cannot run on this machine.
BYTES_PER_PARAMETER = 4 * 4



def check(cfg):
    """The model against the RAM, then the model and its input together; the first that fails raises."""
    check_memory(cfg)
    check_input_memory(cfg)


# === Memory: parameters of the model (architecture.parameter_count) ===

def physical_ram():
    """Bytes of physical RAM (page size x pages), or None where the OS does not say (Windows).
    In a container this is the host's RAM: a cgroup limit can be smaller, never larger."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(cfg):
    """Reject a model whose BYTES_PER_PARAMETER x parameter_count exceeds the physical RAM.

    The bound is for CPU training, this project's set-up; on GPUs the weights, momentum and gradients
    live in GPU memory and only the checkpoint copy needs RAM, so there it can reject a model that would fit."""
    ram = physical_ram()
    if not ram or ram <= 0:
        return
    m = cfg.model
    params = parameter_count(m)
    need = BYTES_PER_PARAMETER * params
    if need > ram:
        raise ConfigError(f"model.width = {m.width}, model.fc_units = {m.fc_units}, model.image_size = "
                          f"{m.image_size} give {params:,} parameters, whose weights, momentum, gradients and checkpoint "
                          f"copy (float32, {BYTES_PER_PARAMETER} bytes per parameter) need ~{need / GiB:,.1f} GiB, more "
                          f"than this machine's {ram / GiB:,.1f} GiB of RAM; expected a smaller model.width, "
                          "model.fc_units or model.image_size")


# Bytes of a float32 value: a training batch and the mean image are float32 once rescaled and normalised.
FLOAT32 = 4


def input_memory(cfg):
    """[(what, bytes, the key that scales it)] of the input a training run holds at least once, besides the
    model: one float32 training batch at the side it has before the crop (data.upscale rescales the whole
    batch; otherwise the model's input side), the float32 mean image (at data.upscale, at data.resize for
    file sources) and, for source synthetic, its two uint8 splits. The input pipeline prefetches more
    batches, so this too is a lower bound."""
    d, m = cfg.data, cfg.model
    side = d.upscale or m.image_size
    mean_side = d.upscale or (d.resize if d.source in FILE_SOURCES else m.image_size)
    c = m.channels
    parts = [(f"a training batch of {d.batch_size} x {side}x{side}x{c} float32", FLOAT32 * d.batch_size * side**2 * c,
              "data.upscale" if d.upscale else "data.batch_size"),
             (f"the mean image of {mean_side}x{mean_side}x{c} float32", FLOAT32 * mean_side**2 * c,
              "data.upscale" if d.upscale else "data.resize")]
    if d.source == "synthetic":
        parts.append((f"the synthetic images, 2 x {d.synthetic_size} x {m.image_size}x{m.image_size}x{c} uint8",
                      2 * d.synthetic_size * m.image_size**2 * c, "data.synthetic_size"))
    return parts


def check_input_memory(cfg):
    """Reject a config whose input (`input_memory`) and model (check_memory's bytes) together exceed the
    RAM: data.upscale, data.batch_size, data.resize and data.synthetic_size scale it. Like check_memory,
    a lower bound: a config it rejects cannot run here. With data.upscale set, the message names the
    largest value that fits at this batch size."""
    ram = physical_ram()
    if not ram or ram <= 0:
        return
    d, m = cfg.data, cfg.model
    model = BYTES_PER_PARAMETER * parameter_count(m)
    parts = input_memory(cfg) + [(f"the model at {BYTES_PER_PARAMETER} bytes per parameter", model, "model.width")]
    need = sum(n for _, n, _ in parts)
    if need <= ram:
        return
    keys = ([f"data.upscale = {d.upscale}"] if d.upscale else []) + [f"data.batch_size = {d.batch_size}"]
    keys += [f"data.resize = {d.resize}"] if d.source in FILE_SOURCES else []
    keys += [f"data.synthetic_size = {d.synthetic_size}"] if d.source == "synthetic" else []
    if d.upscale:  # the largest side s with 4 C (batch + 1) s^2 + the rest <= RAM (the batch and the mean grow as s^2)
        rest = need - parts[0][1] - parts[1][1]
        largest = math.isqrt(max(0, ram - rest) // (FLOAT32 * m.channels * (d.batch_size + 1)))
        expected = (f"data.upscale <= {largest:,} at this data.batch_size" if largest >= m.image_size else
                    f"a smaller data.batch_size (no data.upscale >= model.image_size = {m.image_size} fits at this one)")
    else:
        expected = f"a smaller {max(parts, key=lambda p: p[1])[2]}"
    raise ConfigError(f"{', '.join(keys)}: the run needs ~{need / GiB:,.1f} GiB ("
                      + "; ".join(f"{what}: {n / GiB:,.1f} GiB" for what, n, _ in parts)
                      + f"), more than this machine's {ram / GiB:,.1f} GiB of RAM; expected {expected}")
