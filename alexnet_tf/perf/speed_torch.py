"""The same network in PyTorch, for a side-by-side speed comparison (`python -m alexnet_tf speed --torch`).

PyTorch is an optional benchmark dependency (alexnet_tf/perf/requirements-torch.txt); nothing else imports
this module. Two towers become grouped convolutions (groups=2 on conv2, conv4, conv5, which see
their own tower; conv1 and conv3 see everything), the fc halves become one Linear layer each
(every neuron sees all of the previous layer), and LRN is torch's LocalResponseNorm with alpha
multiplied by n, because torch divides alpha by the window size and the paper does not.
"""

import os
import time

from alexnet_tf import machine
from alexnet_tf.config import load_config
from alexnet_tf.errors import UserError
from alexnet_tf.model import cuda_convnet_padding, tower_channels


def _torch():
    try:
        import torch
    except ImportError:
        raise UserError("--torch needs PyTorch, an optional benchmark dependency: "
                         "pip install -r alexnet_tf/perf/requirements-torch.txt") from None
    return torch


def torch_alexnet(m):
    """An nn.Module equal in shape and multiply-adds to alexnet_tf.model.alexnet for ModelConfig m."""
    torch = _torch()
    nn = torch.nn
    towers = m.towers
    ch = [c * towers for c in tower_channels(towers, m.width)]
    act = nn.ReLU if m.activation == "relu" else nn.Tanh
    pool = (lambda: nn.MaxPool2d(3, 2)) if m.pool == "overlapping" else (lambda: nn.MaxPool2d(2, 2))

    def lrn():
        if not m.lrn:
            return nn.Identity()
        if m.lrn_convention == "paper":  # torch computes alpha / n * sum: pass alpha * n for the paper's formula
            return nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0)
        return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)

    if m.geometry == "imagenet":
        kernel = m.conv1_kernel or 11
        pad = cuda_convnet_padding(m.image_size, kernel, 4)
        first = [nn.ZeroPad2d((0, pad, 0, pad)), nn.Conv2d(m.channels, ch[0], kernel, 4)]
        side = 1 + (m.image_size + pad - kernel) // 4
    else:
        kernel = m.conv1_kernel or 3
        first = [nn.Conv2d(m.channels, ch[0], kernel, 1, padding=kernel // 2)]
        side = m.image_size
    size = 3 if m.pool == "overlapping" else 2
    for _ in range(3):
        side = (side - size) // 2 + 1
    layers = first + [act(), lrn(), pool(),
                      nn.Conv2d(ch[0], ch[1], 5, padding=2, groups=towers), act(), lrn(), pool(),
                      nn.Conv2d(ch[1], ch[2], 3, padding=1), act(),
                      nn.Conv2d(ch[2], ch[3], 3, padding=1, groups=towers), act(),
                      nn.Conv2d(ch[3], ch[4], 3, padding=1, groups=towers), act(), pool(),
                      nn.Flatten(),
                      nn.Linear(side * side * ch[4], m.fc_units), act(), nn.Dropout(m.dropout),
                      nn.Linear(m.fc_units, m.fc_units), act(), nn.Dropout(m.dropout),
                      nn.Linear(m.fc_units, m.num_classes)]
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


def multiply_adds(model, m):
    """Forward multiply-adds per image of the Conv2d and Linear layers (as speed.multiply_adds)."""
    torch = _torch()
    total = 0
    hooks = []

    def conv_hook(layer, inputs, output):
        nonlocal total
        kh, kw = layer.kernel_size
        total += output.shape[2] * output.shape[3] * kh * kw * (layer.in_channels // layer.groups) * layer.out_channels

    def linear_hook(layer, inputs, output):
        nonlocal total
        total += layer.in_features * layer.out_features

    for layer in model.modules():
        if isinstance(layer, torch.nn.Conv2d):
            hooks.append(layer.register_forward_hook(conv_hook))
        elif isinstance(layer, torch.nn.Linear):
            hooks.append(layer.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(torch.zeros(1, m.channels, m.image_size, m.image_size))
    for h in hooks:
        h.remove()
    return total


def speeds(name, model_spec, precision, batch, steps, threads=None, log=print, cpuinfo=None):
    """Training and inference images/s of the PyTorch model in float32 or bf16 autocast (a list of
    one row), or no rows for a precision the CPU has no native support for (said in one line)."""
    if "float16" in precision and "bfloat16" not in precision:
        log(f"pytorch {name}: skipping {precision}: this benchmark times PyTorch in float32 and bf16 only")
        return []
    if "bfloat16" in precision and not machine.native_bfloat16(cpuinfo):
        log(f"pytorch {name}: skipping bf16 autocast: this CPU ({machine.cpu_model(cpuinfo)}) has no native bfloat16 "
            "(AVX512-BF16 or AMX), so it would time an emulation")
        return []
    torch = _torch()
    torch.set_num_threads(threads or os.cpu_count())
    path, overrides = model_spec
    m = load_config(path, overrides).model
    model = torch_alexnet(m)
    macs = multiply_adds(model, m)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)  # coupled: the paper's rule
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(batch, m.channels, m.image_size, m.image_size, generator=g) * 50).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, m.num_classes, (batch,), generator=g)
    bf16 = "bfloat16" in precision
    label = "bf16 autocast" if bf16 else "float32"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad(), autocast():
            model(x)

    def timed(fn):
        for _ in range(2):
            fn()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - start) / steps

    model.train()
    train_s = timed(train_step)
    model.eval()
    infer_s = timed(infer)
    return [dict(framework="pytorch", model=name, precision=label, batch=batch,
                 train_images_per_s=batch / train_s, inference_images_per_s=batch / infer_s,
                 forward_multiply_adds=macs, train_flops_per_s=3 * 2 * macs * batch / train_s,
                 inference_flops_per_s=2 * macs * batch / infer_s, torch_version=torch.__version__)]

