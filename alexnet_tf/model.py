"""AlexNet as in the paper's Fig. 2: two towers built as subgraphs of one functional model.

Shapes in comments are for the paper configuration (224x224x3 input, two towers, width 1).
Layer names follow the paper: `conv{i}_{tower}`, `fc6_{tower}`, `fc7_{tower}`, `fc8`.
"""

import contextlib
import math

import keras
from keras import layers

from alexnet_tf.layers import LocalResponseNormalization, ReplicaDropout

# Kernels per conv layer for the whole two-tower net, §3.5: conv1..conv5.
# The channel rule lives in config_checks (no Keras there), which the config's memory check also uses.
from alexnet_tf.config_checks import PAPER_CONV_CHANNELS, tower_channels  # noqa: E402,F401
# Layers whose biases the paper initialises to 1 (§5); every other bias starts at 0.
HIDDEN_BIAS_LAYERS = ("conv2", "conv4", "conv5", "conv6", "fc6", "fc7")


def cuda_convnet_padding(size, kernel, stride):
    """Bottom/right zero padding that reproduces cuda-convnet's conv output size.

    cuda-convnet rounds the output size up: out = 1 + ceil((size - kernel) / stride), so the
    last window hangs over the bottom/right edge. 224 with 11x11/4 gives 55 (pad 3); 227 gives 55 (pad 0).
    """
    out = 1 + math.ceil((size - kernel) / stride)
    return (out - 1) * stride + kernel - size




def alexnet(
    num_classes=1000,
    image_size=224,
    channels=3,
    *,
    towers=2,
    geometry="imagenet",
    conv1_kernel=0,
    width=1.0,
    fc_units=4096,
    activation="relu",
    lrn=True,
    lrn_constant=False,
    lrn_convention="paper",
    lrn_across_towers=False,
    pool="overlapping",
    dropout=0.5,
    conv6=False,
    remove_conv=(),
    weight_init="normal",
    weight_std=0.01,
    hidden_bias=1.0,
    tower_devices=None,
    name="alexnet",
):
    """Build the paper's network (or one of its ablation variants) as a Keras functional model.

    Returns a model mapping (B, image_size, image_size, channels) float images to (B, num_classes)
    logits. Every argument mirrors a key of `ModelConfig`; see there and docs/configuration.md for their meaning.
    `tower_devices` (one device name per tower, for the `towers` strategy) creates each tower's
    weights on its device, as the paper kept each half of the net on its own GPU (§3.2); where the
    layers *run* is set at training time (`distribute.towers_placed`). The shared layers (the
    concatenations, fc8) stay on the default device.
    """
    def kernel_init():
        if weight_init == "he_normal":
            return keras.initializers.HeNormal()
        return keras.initializers.RandomNormal(0.0, weight_std)

    def bias_init(layer):
        value = hidden_bias if layer.split("_")[0] in HIDDEN_BIAS_LAYERS else 0.0
        return keras.initializers.Constant(value)

    def on_device(tower):
        """Variables created inside live on the tower's device (if any)."""
        if tower_devices is None or tower is None:
            return contextlib.nullcontext()
        return keras.device(tower_devices[tower])

    def conv(x, layer, tower, filters, kernel, stride=1, padding="same"):
        with on_device(tower):
            return layers.Conv2D(filters, kernel, strides=stride, padding=padding, activation=activation,
                                 kernel_initializer=kernel_init(), bias_initializer=bias_init(layer),
                                 name=f"{layer}_{tower}")(x)

    def dense(x, layer, tower, units, act=activation):
        with on_device(tower):
            return layers.Dense(units, activation=act, kernel_initializer=kernel_init(),
                                bias_initializer=bias_init(layer), name=f"{layer}_{tower}")(x)

    def norm(h, layer):
        """§3.3 LRN of every tower's maps h[t]: each tower over its own channels, as the paper's towers
        on their own GPUs; with lrn_across_towers the windows run across the tower boundary, as
        Caffe's one LRN layer over a grouped convolution's whole output (bvlc_alexnet's norm1, norm2)."""
        if not lrn:
            return h
        i = layer[-1]
        if lrn_constant:  # the ablation: the factor LRN tends to when alpha * sum a^2 << k, without the normaliser
            factor = LocalResponseNormalization(convention=lrn_convention).constant_factor
            return [layers.Rescaling(factor, name=f"lrn{i}_{t}")(h[t]) for t in T]
        if not lrn_across_towers or len(h) == 1:
            return [LocalResponseNormalization(convention=lrn_convention, name=f"lrn{i}_{t}")(h[t]) for t in T]
        both, c = layers.Concatenate(name=f"concat_lrn{i}")(h), h[0].shape[-1]  # (B, H, W, towers * c)
        return [LocalResponseNormalization(convention=lrn_convention, output_channels=(t * c, (t + 1) * c),
                                           name=f"lrn{i}_{t}")(both) for t in T]

    def max_pool(x, layer, tower):
        size = 3 if pool == "overlapping" else 2  # §3.4: z=3, s=2 overlaps; z=s=2 does not
        return layers.MaxPool2D(size, strides=2, padding="valid", name=f"pool{layer[-1]}_{tower}")(x)

    def merge(xs, name):
        return xs[0] if len(xs) == 1 else layers.Concatenate(name=name)(xs)

    ch = tower_channels(towers, width)
    T = range(towers)

    # === Input ===
    image = keras.Input((image_size, image_size, channels), name="image")
    x = image
    if geometry == "imagenet":
        # cuda-convnet's output-size rounding: a 224 input is padded to 227 at the bottom/right.
        kernel = conv1_kernel or 11
        pad = cuda_convnet_padding(image_size, kernel, 4)
        if pad:
            x = layers.ZeroPadding2D(((0, pad), (0, pad)), name="pad")(x)  # (B, 227, 227, 3)
        conv1 = dict(kernel=kernel, stride=4, padding="valid")
    else:
        conv1 = dict(kernel=conv1_kernel or 3, stride=1, padding="same")  # small images: keep the resolution

    # === Towers: conv1 -> conv2 see only their own tower (§3.5) ===
    h = [conv(x, "conv1", t, ch[0], **conv1) for t in T]           # (B, 55, 55, 48) per tower
    h = [max_pool(a, "conv1", t) for t, a in enumerate(norm(h, "conv1"))]  # (B, 27, 27, 48)
    if 2 not in remove_conv:
        h = norm([conv(h[t], "conv2", t, ch[1], 5) for t in T], "conv2")  # (B, 27, 27, 128)
    h = [max_pool(h[t], "conv2", t) for t in T]                    # (B, 13, 13, 128)

    # === conv3 reads both towers; conv4, conv5 their own (§3.5) ===
    crossed = False
    for i, filters in ((3, ch[2]), (4, ch[3]), (5, ch[4])):        # (B, 13, 13, 192|192|128)
        if i in remove_conv:
            continue
        if not crossed:  # conv3, or the next layer if conv3 is removed, reads both towers
            both = merge(h, f"concat{i}")
            h = [both for _ in T]
            crossed = True
        h = [conv(h[t], f"conv{i}", t, filters, 3) for t in T]
    h = [max_pool(h[t], "conv5", t) for t in T]                     # (B, 6, 6, 128)
    if conv6:  # "1 CNN*" (§6): one more conv layer over the last pooling layer, own tower
        h = [conv(h[t], "conv6", t, ch[4], 3) for t in T]           # (B, 6, 6, 128)

    # === Classifier: every fc neuron sees all of the previous layer; halves live on the towers ===
    x = merge([layers.Flatten(name=f"flatten_{t}")(h[t]) for t in T], "concat6")  # (B, 9216)
    per_tower = fc_units // towers
    for layer in ("fc6", "fc7"):
        h = [dense(x, layer, t, per_tower) for t in T]              # (B, 2048) per tower
        h = [ReplicaDropout(dropout, name=f"dropout{layer[-1]}_{t}")(h[t]) for t in T]
        x = merge(h, f"concat{int(layer[-1]) + 1}")                 # (B, 4096)
    # fc8 in float32 so the logits (and softmax) keep full precision under mixed policies.
    logits = layers.Dense(num_classes, kernel_initializer=kernel_init(), bias_initializer=bias_init("fc8"),
                          dtype="float32", name="fc8")(x)           # (B, num_classes)
    return keras.Model(image, logits, name=name)


def build_model(config, tower_devices=None):
    """The model described by a `Config` (or its `model` section); `tower_devices`: see `alexnet`."""
    m = getattr(config, "model", config)
    return alexnet(
        m.num_classes, m.image_size, m.channels, towers=m.towers, geometry=m.geometry,
        conv1_kernel=m.conv1_kernel, width=m.width,
        fc_units=m.fc_units, activation=m.activation, lrn=m.lrn, lrn_constant=m.lrn_constant, lrn_convention=m.lrn_convention,
        lrn_across_towers=m.lrn_across_towers, pool=m.pool, dropout=m.dropout, conv6=m.conv6,
        remove_conv=tuple(m.remove_conv),
        weight_init=m.weight_init, weight_std=m.weight_std, hidden_bias=m.hidden_bias,
        tower_devices=tower_devices,
    )
