"""The architecture against the paper's numbers, counted by hand."""

import keras
import numpy as np
import pytest

import alexnet_tf
from alexnet_tf.model import alexnet, cuda_convnet_padding
from conftest import tiny_overrides


def paper_parameter_count():
    """§3.5 layer by layer: (kernel h * w * inputs seen + 1 bias) * kernels."""
    layers = [
        (11 * 11 * 3, 96),     # conv1: each kernel sees the 3 colour channels
        (5 * 5 * 48, 256),     # conv2: own tower's 48 maps
        (3 * 3 * 256, 384),    # conv3: both towers, 2 x 128
        (3 * 3 * 192, 384),    # conv4: own tower's 192
        (3 * 3 * 192, 256),    # conv5: own tower's 192
        (6 * 6 * 256, 4096),   # fc6
        (4096, 4096),          # fc7
        (4096, 1000),          # fc8
    ]
    return sum((fan_in + 1) * n for fan_in, n in layers)


@pytest.fixture(scope="module")
def paper_model():
    return alexnet_tf.build_model(alexnet_tf.load_config(None))


def test_parameter_count_is_the_papers(paper_model):
    assert paper_parameter_count() == 60_965_224
    assert paper_model.count_params() == 60_965_224


def test_spatial_sizes_follow_the_paper(paper_model):
    expected = {  # §3.5 / Fig. 2: 224 -> 55 -> 27 -> 13 -> 13 -> 13 -> 6
        "conv1_0": (55, 55, 48), "pool1_0": (27, 27, 48), "conv2_1": (27, 27, 128), "pool2_1": (13, 13, 128),
        "conv3_0": (13, 13, 192), "conv4_1": (13, 13, 192), "conv5_0": (13, 13, 128), "pool5_1": (6, 6, 128),
        "concat6": (9216,), "fc6_0": (2048,), "fc7_1": (2048,), "fc8": (1000,),
    }
    for name, shape in expected.items():
        assert tuple(paper_model.get_layer(name).output.shape[1:]) == shape, name


def test_cuda_convnet_rounding_makes_224_and_227_equivalent():
    # cuda-convnet: out = 1 + ceil((in - k) / s); 224 needs 3 pixels of bottom/right padding.
    assert cuda_convnet_padding(224, 11, 4) == 3
    assert cuda_convnet_padding(227, 11, 4) == 0
    m227 = alexnet(image_size=227)
    assert m227.get_layer("conv1_0").output.shape[1:3] == (55, 55)
    assert m227.count_params() == 60_965_224


def test_initialisation_follows_section_5(paper_model):
    for layer in paper_model.layers:
        if not layer.weights:
            continue
        kernel, bias = (w.numpy() for w in layer.weights)
        assert abs(kernel.mean()) < 2e-3 and abs(kernel.std() - 0.01) < 1e-3, layer.name
        expected_bias = 1.0 if layer.name.split("_")[0] in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        np.testing.assert_array_equal(bias, expected_bias, err_msg=layer.name)


def test_towers_only_meet_at_conv3_and_the_classifier():
    """Change tower 0's conv1 output (via its kernel): tower 1's conv2 is unchanged, conv3 on both towers moves."""
    import keras
    model = alexnet_tf.build_model(alexnet_tf.load_config(None, tiny_overrides(**{"model.width": 0.25})))
    names = ["conv2_0", "conv2_1", "conv3_0", "conv3_1", "conv4_1", "fc8"]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype("float32")
    before = dict(zip(names, (np.asarray(y) for y in probe(x))))
    kernel = model.get_layer("conv1_0").kernel
    kernel.assign(kernel.numpy() + np.random.default_rng(1).normal(size=kernel.shape).astype("float32"))
    after = dict(zip(names, (np.asarray(y) for y in probe(x))))
    np.testing.assert_array_equal(after["conv2_1"], before["conv2_1"])  # other tower, before the crossing
    for n in ("conv2_0", "conv3_0", "conv3_1", "conv4_1", "fc8"):     # own tower, and everything after conv3
        assert not np.allclose(after[n], before[n]), n


@pytest.mark.parametrize("overrides, count", [
    # One tower (§3.2): conv1-4 halved, conv5 kept at 256, the same classifier.
    ({"model.towers": 1}, (363 + 1) * 48 + (5 * 5 * 48 + 1) * 128 + (9 * 128 + 1) * 192 + (9 * 192 + 1) * 192
     + (9 * 192 + 1) * 256 + (9216 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 1000),
    # 1 CNN*: a sixth 3x3 conv layer, 128 kernels per tower over its own tower's 128 maps.
    ({"model.conv6": True}, 60_965_224 + 2 * (9 * 128 + 1) * 128),
    # Without conv4, conv5 reads conv3's 192 maps (the same shape conv4 would have given it).
    ({"model.remove_conv": [4]}, 60_965_224 - (9 * 192 + 1) * 384),
    # Without conv3, the towers meet at conv4, which then reads both towers' 128 + 128 maps.
    ({"model.remove_conv": [3]}, 60_965_224 - (9 * 256 + 1) * 384 - (9 * 192 + 1) * 384 + (9 * 256 + 1) * 384),
])
def test_variant_parameter_counts(overrides, count):
    cfg = alexnet_tf.load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    assert alexnet_tf.build_model(cfg).count_params() == count


def test_variants_change_the_layers_they_name():
    cfg = alexnet_tf.load_config(None, tiny_overrides(**{
        "model.activation": "tanh", "model.lrn": False, "model.pool": "non_overlapping", "model.dropout": 0.2}))
    model = alexnet_tf.build_model(cfg)
    names = [l.name for l in model.layers]
    assert not any(n.startswith("lrn") for n in names)
    assert model.get_layer("conv1_0").activation.__name__ == "tanh"
    assert model.get_layer("pool1_0").pool_size == (2, 2)
    assert model.get_layer("dropout6_1").rate == 0.2
    # Non-overlapping 2x2/2 pools on a 28x28 image: 28 -> 14 -> 7 -> 3.
    assert model.get_layer("pool5_0").output.shape[1:3] == (3, 3)


def test_lrn_constant_puts_k_to_the_minus_beta_where_the_lrn_layers_were():
    """model.lrn_constant: each LRN layer becomes b = a * k^-beta (2^-0.75 with the paper's constants,
    1 with Caffe's k = 1); the rest of the network, its weights and their count stay as they were."""
    base = alexnet_tf.load_config(None, tiny_overrides())
    const = alexnet_tf.load_config(None, tiny_overrides(**{"model.lrn_constant": True}))
    a, b = alexnet_tf.build_model(base), alexnet_tf.build_model(const)
    assert a.count_params() == b.count_params() and [l.name for l in a.layers] == [l.name for l in b.layers]
    b.set_weights(a.get_weights())
    x = np.random.default_rng(0).normal(0, 30, (2, 28, 28, 1)).astype("float32")
    for name in ("lrn1_0", "lrn2_1"):
        inp = keras.Model(b.input, b.get_layer(name).input).predict(x, verbose=0)
        out = keras.Model(b.input, b.get_layer(name).output).predict(x, verbose=0)
        np.testing.assert_allclose(out, inp * 2.0 ** -0.75, rtol=1e-6)
    # with small activations (alpha * sum a^2 << k) the real LRN is that factor too: the two nets agree
    small = x * 1e-3
    np.testing.assert_allclose(a.predict(small, verbose=0), b.predict(small, verbose=0), rtol=1e-3, atol=1e-6)
    caffe = alexnet_tf.build_model(alexnet_tf.load_config(None, tiny_overrides(**{
        "model.lrn_constant": True, "model.lrn_convention": "caffe"})))
    assert caffe.get_layer("lrn1_0").scale == 1.0


@pytest.mark.parametrize("size, pooled", [(28, 2), (32, 3)])
def test_small_geometry(size, pooled):
    cfg = alexnet_tf.load_config(None, tiny_overrides(**{"model.image_size": size}))
    model = alexnet_tf.build_model(cfg)
    assert model.get_layer("conv1_0").output.shape[1:3] == (size, size)
    # three 3x3/2 valid pools: 28 -> 13 -> 6 -> 2, 32 -> 15 -> 7 -> 3
    assert model.get_layer("pool5_0").output.shape[1:3] == (pooled, pooled)
    assert model.output.shape[1:] == (10,)


def test_width_multiplier_scales_every_conv_layer():
    cfg = alexnet_tf.load_config(None, ["model.width=0.5"])
    model = alexnet_tf.build_model(cfg)
    assert [model.get_layer(f"conv{i}_0").filters for i in range(1, 6)] == [24, 64, 96, 96, 64]


def test_conv1_kernel_override_keeps_the_geometry():
    small = alexnet_tf.build_model(alexnet_tf.load_config(None, tiny_overrides(**{"model.conv1_kernel": 5})))
    assert small.get_layer("conv1_1").kernel.shape == (5, 5, 1, 6)
    assert small.get_layer("conv1_1").output.shape[1:3] == (28, 28)
    # imagenet geometry: the cuda-convnet rounding adapts the padding to the kernel
    assert cuda_convnet_padding(224, 9, 4) == 1  # out = 1 + ceil(215 / 4) = 55 -> needs 225
