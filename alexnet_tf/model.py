"""AlexNet as in the paper's Fig. 2: two towers built as subgraphs of one functional model.

Shapes in comments are for the paper configuration (224x224x3 input, two towers, width 1).
Layer names follow the paper: `conv{i}_{tower}`, `fc6_{tower}`, `fc7_{tower}`, `fc8`; saved models
and the Caffe importer (caffe/weights.py) find the weights by these names. The arithmetic (kernels
per tower, conv1's geometry, where the towers meet) is architecture.py's, shared with the config's
memory check.
"""

import contextlib

import keras
from keras import layers

# PAPER_CONV_CHANNELS, tower_channels, cuda_convnet_padding: also imported from here (perf/speed_torch.py, tests)
from alexnet_tf.architecture import (HIDDEN_BIAS_LAYERS, PAPER_CONV_CHANNELS, conv1_geometry,  # noqa: F401
                                     cuda_convnet_padding, pool_size, tower_channels, upper_convs)
from alexnet_tf.config import ModelConfig
from alexnet_tf.layers import LocalResponseNormalization, ReplicaDropout
from alexnet_tf.ops import fused_lrn


def build_model(config, tower_devices=None, name="alexnet"):
    """Build the network a `Config` (or its `model` section, a `ModelConfig`) describes, as a Keras
    functional model mapping (B, image_size, image_size, channels) float images to (B, num_classes) logits.

    `tower_devices` (one device name per tower, for the `towers` strategy) creates each tower's
    weights on its device, as the paper kept each half of the net on its own GPU (§3.2); where the
    layers *run* is set at training time (`distribute.towers_placed`). The shared layers (the
    concatenations, fc8) stay on the default device.
    """
    m = getattr(config, "model", config)
    make = _TowerLayers(m, tower_devices)
    channels = tower_channels(m.towers, m.width)
    image = keras.Input((m.image_size, m.image_size, m.channels), name="image")  # (B, 224, 224, 3)

    # === conv1 -> conv2 see only their own tower (§3.5) ===
    h = make.pool(make.lrn(make.conv1(image), 1), 1)            # (B, 55, 55, 48) -> (B, 27, 27, 48) per tower
    if 2 not in m.remove_conv:
        h = make.lrn(make.conv(h, 2, channels[1], 5), 2)         # (B, 27, 27, 128)
    h = make.pool(h, 2)                                          # (B, 13, 13, 128)

    # === conv3 reads both towers; conv4, conv5 their own (§3.5) ===
    for i, filters, joins in upper_convs(m):
        if joins:  # conv3, or the next layer if conv3 is removed
            h = make.join_towers(h, f"concat{i}")                # (B, 13, 13, 256), the same tensor for each tower
        h = make.conv(h, i, filters, 3)                          # (B, 13, 13, 192 | 192 | 128)
    h = make.pool(h, 5)                                          # (B, 6, 6, 128)
    if m.conv6:  # "1 CNN*" (§6): one more conv layer over the last pooling layer, own tower
        h = make.conv(h, 6, channels[4], 3)                      # (B, 6, 6, 128)

    # === Classifier: every fc neuron sees all of the previous layer; halves live on the towers ===
    x = make.merge([layers.Flatten(name=f"flatten_{t}")(h[t]) for t in make.towers], "concat6")  # (B, 9216)
    x = make.fc(x, 6)                                            # (B, 4096): 2048 per tower
    x = make.fc(x, 7)                                            # (B, 4096)
    return keras.Model(image, make.fc8(x), name=name)            # (B, num_classes) logits


def alexnet(*, tower_devices=None, name="alexnet", **switches):
    """`build_model` with the `ModelConfig` keys as keyword arguments (unset ones: the paper's values),
    e.g. `alexnet(image_size=227, towers=1)`."""
    return build_model(ModelConfig(**switches), tower_devices, name)


class _TowerLayers:
    """The layers of one model: each method makes one paper layer for every tower, taking and returning
    a list with one tensor per tower. Layers are created in the order the paper lists them, which fixes
    the initialisers' seeds under `keras.utils.set_random_seed`."""

    def __init__(self, m, tower_devices):
        self.m, self.devices = m, tower_devices
        self.towers = range(m.towers)

    def conv1(self, image):
        """Zero padding for cuda-convnet's rounding (imagenet geometry: 224 -> 227), then conv1."""
        g = conv1_geometry(self.m)
        x = layers.ZeroPadding2D(((0, g.pad), (0, g.pad)), name="pad")(image) if g.pad else image
        return self.conv([x] * self.m.towers, 1, tower_channels(self.m.towers, self.m.width)[0], g.kernel,
                         stride=g.stride, padding=g.padding)

    def conv(self, h, i, filters, kernel, stride=1, padding="same"):
        """conv{i}_{t} over h[t] for every tower t, with the model's activation."""
        out = []
        for t in self.towers:
            with self._on_device(t):
                out.append(layers.Conv2D(filters, kernel, strides=stride, padding=padding, activation=self.m.activation,
                                         kernel_initializer=self._kernel_init(),
                                         bias_initializer=self._bias_init(f"conv{i}"), name=f"conv{i}_{t}")(h[t]))
        return out

    def lrn(self, h, i):
        """§3.3 LRN of every tower's maps h[t] after conv{i}: each tower over its own channels, as the
        paper's towers on their own GPUs; with lrn_across_towers the windows run across the tower boundary,
        as Caffe's one LRN layer over a grouped convolution's whole output (bvlc_alexnet's norm1, norm2)."""
        m = self.m
        if not m.lrn:
            return h
        if m.lrn_constant:  # the ablation: the factor LRN tends to when alpha * sum a^2 << k, without the normaliser
            factor = LocalResponseNormalization(convention=m.lrn_convention).constant_factor
            return [layers.Rescaling(factor, name=f"lrn{i}_{t}")(h[t]) for t in self.towers]
        if m.lrn_kernel == "fused":
            fused_lrn.require()  # one line now, not an error from inside the first traced step
        if not m.lrn_across_towers or len(h) == 1:
            return [LocalResponseNormalization(convention=m.lrn_convention, kernel=m.lrn_kernel,
                                               name=f"lrn{i}_{t}")(h[t]) for t in self.towers]
        both, c = layers.Concatenate(name=f"concat_lrn{i}")(h), h[0].shape[-1]  # (B, H, W, towers * c)
        return [LocalResponseNormalization(convention=m.lrn_convention, output_channels=(t * c, (t + 1) * c),
                                           kernel=m.lrn_kernel, name=f"lrn{i}_{t}")(both) for t in self.towers]

    def pool(self, h, i):
        """pool{i}_{t}: max pooling after conv{i}, size by model.pool (architecture.pool_size), stride 2."""
        size = pool_size(self.m)
        return [layers.MaxPool2D(size, strides=2, padding="valid", name=f"pool{i}_{t}")(h[t]) for t in self.towers]

    def join_towers(self, h, name):
        """Every tower's next layer reads the maps of all towers."""
        both = self.merge(h, name)
        return [both for _ in self.towers]

    def merge(self, xs, name):
        return xs[0] if len(xs) == 1 else layers.Concatenate(name=name)(xs)

    def fc(self, x, i):
        """fc{i}_{t} (each tower's share of the units, over all of x), dropout{i}_{t} (§4.2), merged."""
        per_tower = self.m.fc_units // self.m.towers
        h = []
        for t in self.towers:
            with self._on_device(t):
                h.append(layers.Dense(per_tower, activation=self.m.activation, kernel_initializer=self._kernel_init(),
                                      bias_initializer=self._bias_init(f"fc{i}"), name=f"fc{i}_{t}")(x))
        h = [ReplicaDropout(self.m.dropout, name=f"dropout{i}_{t}")(h[t]) for t in self.towers]
        return self.merge(h, f"concat{i + 1}")

    def fc8(self, x):
        """fc8 in float32 so the logits (and softmax) keep full precision under mixed policies."""
        return layers.Dense(self.m.num_classes, kernel_initializer=self._kernel_init(), bias_initializer=self._bias_init("fc8"),
                            dtype="float32", name="fc8")(x)

    def _kernel_init(self):
        if self.m.weight_init == "he_normal":
            return keras.initializers.HeNormal()
        return keras.initializers.RandomNormal(0.0, self.m.weight_std)

    def _bias_init(self, layer):
        return keras.initializers.Constant(self.m.hidden_bias if layer in HIDDEN_BIAS_LAYERS else 0.0)

    def _on_device(self, tower):
        """Variables created inside live on the tower's device (if any)."""
        if self.devices is None:
            return contextlib.nullcontext()
        return keras.device(self.devices[tower])
