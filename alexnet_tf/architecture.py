"""The network's arithmetic, without Keras: kernels per tower, conv1's geometry, which conv layers
exist and where the towers meet, pooling, and the parameter count.

`model.py` builds its layers from these rules and `config_checks` sizes a model's memory with them
before TensorFlow starts, so the two cannot disagree. Every function takes a `ModelConfig` (or
plain numbers); none imports TensorFlow.
"""

import math
from dataclasses import dataclass

# The paper's kernels per conv layer, conv1..conv5, both towers together (§3.5).
PAPER_CONV_CHANNELS = (96, 256, 384, 384, 256)
# Layers whose biases the paper initialises to 1 (§5); every other bias starts at 0.
HIDDEN_BIAS_LAYERS = ("conv2", "conv4", "conv5", "conv6", "fc6", "fc7")


def tower_channels(towers, width):
    """Kernels per tower for conv1..conv5.

    towers=2: half of the paper's kernels on each tower. towers=1 is the paper's one-GPU
    baseline (§3.2): half the kernels in every conv layer except conv5, which keeps all 256
    (footnote 2: conv5 feeds fc6, which holds most parameters, so it was not halved).
    """
    half = [c // 2 for c in PAPER_CONV_CHANNELS]
    if towers == 1:
        half[4] = PAPER_CONV_CHANNELS[4]
    return [max(1, round(c * width)) for c in half]


def cuda_convnet_padding(size, kernel, stride):
    """Bottom/right zero padding that reproduces cuda-convnet's conv output size.

    cuda-convnet rounds the output size up: out = 1 + ceil((size - kernel) / stride), so the
    last window hangs over the bottom/right edge. 224 with 11x11/4 gives 55 (pad 3); 227 gives 55 (pad 0).
    """
    out = 1 + math.ceil((size - kernel) / stride)
    return (out - 1) * stride + kernel - size


@dataclass(frozen=True)
class Conv1:
    """conv1's kernel, stride and Keras padding, the zero padding added before it and its output side."""

    kernel: int
    stride: int
    padding: str     # "valid" or "same"
    pad: int         # bottom/right zero padding of the input (cuda-convnet's rounding), 0 = none
    side: int        # output side


def conv1_geometry(m):
    """imagenet: kernel 11 (or model.conv1_kernel), stride 4, cuda-convnet's rounding (224 -> 55);
    small: kernel 3 (or model.conv1_kernel), stride 1, 'same' -- small images keep their resolution."""
    if m.geometry == "imagenet":
        kernel = m.conv1_kernel or 11
        side = max(0, 1 - (-(m.image_size - kernel) // 4))  # 1 + ceil((s - k) / 4)
        return Conv1(kernel, 4, "valid", cuda_convnet_padding(m.image_size, kernel, 4), side)
    return Conv1(m.conv1_kernel or 3, 1, "same", 0, m.image_size)


def pool_size(m):
    """§3.4: z=3, s=2 overlaps (model.pool = overlapping); z=s=2 does not. The stride is always 2."""
    return 3 if m.pool == "overlapping" else 2


def pooled_side(side, size):
    """Output side of a `size` x `size`/2 'valid' max pool over a side x side map."""
    return max(0, (side - size) // 2 + 1)


def upper_convs(m):
    """conv3, conv4, conv5 as (layer number, kernels per tower, joins): the ones not in model.remove_conv.

    `joins` is true for the first one present, which reads both towers (conv3 in the paper, §3.5;
    conv4 if conv3 is removed); the others read their own tower only.
    """
    c = tower_channels(m.towers, m.width)
    present = [(i, c[i - 1]) for i in (3, 4, 5) if i not in m.remove_conv]
    return [(i, filters, k == 0) for k, (i, filters) in enumerate(present)]


def parameter_count(m):
    """Trainable + non-trainable parameters of `model.build_model(m)` (= its count_params()).

    T = towers, c = tower_channels(T, width), C = channels, k1 = conv1 kernel, n = side after each
    pool (`pooled_side`):

      conv (k x k, in -> out, per tower)  T * (k*k*in + 1) * out
      conv1    k1 x k1, C -> c0, then pool
      conv2    5x5, c0 -> c1 (unless removed), then pool
      conv3-5  3x3; the one that joins the towers reads in = T * its input's channels, the others
               their own; conv5 (never removed) -> c4, then pool to side n5
      conv6    3x3, c4 -> c4 (if model.conv6)
      fc6      T * (T*n5*n5*c4 + 1) * (fc_units / T)
      fc7      T * (fc_units + 1) * (fc_units / T)
      fc8      (fc_units + 1) * num_classes
    LRN, pooling, dropout, padding and concatenation have no weights.
    """
    T, c, p = m.towers, tower_channels(m.towers, m.width), pool_size(m)

    def conv(k, cin, cout):
        return T * (k * k * cin + 1) * cout

    first = conv1_geometry(m)
    total = conv(first.kernel, m.channels, c[0])
    side, cin = pooled_side(first.side, p), c[0]
    if 2 not in m.remove_conv:
        total += conv(5, cin, c[1])
        cin = c[1]
    side = pooled_side(side, p)
    for _, cout, joins in upper_convs(m):
        total += conv(3, T * cin if joins else cin, cout)
        cin = cout
    side = pooled_side(side, p)
    if m.conv6:
        total += conv(3, c[4], c[4])
    per_tower = m.fc_units // T
    total += T * (T * side * side * c[4] + 1) * per_tower      # fc6
    total += T * (m.fc_units + 1) * per_tower                   # fc7
    return total + (m.fc_units + 1) * m.num_classes             # fc8
