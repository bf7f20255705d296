"""Bytes that cross between devices in one training step, per strategy: arithmetic from the layer shapes.

    python -m alexnet_tf.perf.traffic [--config PATH] [--set section.key=value ...] [--batch 128] [--devices 2 4 8]

Counted: every tensor one device sends to another in a step of the project's implementation, forward
(activations, and weights read on a device other than their own) and backward (their gradients), in
float32 (4 bytes). Device 0 is where the global batch arrives (the host CPU under distribute.logical_cpus;
on GPUs the batch crosses from the host to every GPU under every strategy, which is not counted). Scalars
(learning rate, dropout seeds) are left out. tests/test_hybrid.py checks every total for D = 2 against the
tensors TensorFlow's partitioned step graphs send between the devices (and feed to the all-reduce).

  mirrored  other replicas' input rows; a ring all-reduce of every gradient (2(D-1)/D of them sent by each
            device, the algorithm of NCCL and of TensorFlow's CPU collectives); the replicas' step sums
  towers    D = 2 only: the whole batch to tower 1's conv1; where the towers meet, tower 1's pool2, pool5 and
            fc6/fc7 outputs to device 0 (the concatenations) and the concatenations back to conv3_1, fc6_1,
            fc7_1; the same sizes backward. The weights never move.
  hybrid    other devices' input rows; pool5's all-gather, fc6's and fc7's output all-gathers and the logits
            to device 0, forward and backward; every conv weight read by the D-1 devices that do not hold it
            and its gradient sent back; column blocks of fc weights held by another device (fc8 is one Keras
            variable on device 0; with D > 2 the per-tower fc6/fc7 halves are split further) and their
            gradients. `stored=True` leaves out that last item: the paper's scheme, where every device
            stores its own blocks.
"""

import argparse
from dataclasses import dataclass

from alexnet_tf.architecture import conv1_geometry, parameter_count, pool_size, pooled_side, tower_channels

FLOAT = 4  # bytes


@dataclass(frozen=True)
class Shapes:
    """What the traffic depends on, in values (not bytes), per image or per layer."""

    image: int         # conv1's input (after cuda-convnet's zero padding)
    joined: int        # one tower's pool2 output, which the first joining conv layer reads from both towers
    features: int      # pool5 flattened, both towers: fc6's input
    units: int         # fc6 and fc7
    classes: int       # fc8
    towers: int
    conv_params: int   # conv1-conv5 (conv6), both towers, biases included
    params: int        # every trainable value


def shapes(m):
    """`Shapes` of a `ModelConfig` (the paper's layers; conv6 and removed conv layers as architecture.py counts them)."""
    g, p, c, T = conv1_geometry(m), pool_size(m), tower_channels(m.towers, m.width), m.towers
    side2 = pooled_side(pooled_side(g.side, p), p)
    joined = side2 * side2 * (c[0] if 2 in m.remove_conv else c[1])
    side5 = pooled_side(side2, p)
    features = T * side5 * side5 * c[4]
    fc = (features + 1) * m.fc_units + (m.fc_units + 1) * m.fc_units + (m.fc_units + 1) * m.num_classes
    padded = m.image_size + g.pad
    return Shapes(padded * padded * m.channels, joined, features, m.fc_units, m.num_classes, T,
                  parameter_count(m) - fc, parameter_count(m))


def _first_block(n, parts):
    return n // parts  # hybrid.blocks(n, parts)[0]: device 0's rows or columns


def mirrored(s, batch, devices):
    """[(what, bytes)] of one `mirrored` step on `devices` replicas."""
    D = devices
    return [("input rows to replicas 1..D-1", (batch - _first_block(batch, D)) * s.image * FLOAT),
            ("ring all-reduce of the gradients", 2 * (D - 1) * s.params * FLOAT),
            ("step sums to device 0", (D - 1) * 4 * FLOAT)]


def towers(s, batch):
    """[(what, bytes)] of one `towers` step (two devices)."""
    crossing = s.joined + 2 * s.joined + s.features // 2 + s.features + s.units // 2 + s.units + s.units // 2
    return [("images to tower 1", batch * s.image * FLOAT),
            ("tower joins, forward", batch * crossing * FLOAT),
            ("tower joins, backward", batch * crossing * FLOAT)]


def hybrid(s, batch, devices, stored=False):
    """[(what, bytes)] of one `hybrid` step on `devices` devices (stored: without moving fc weight blocks)."""
    D, B = devices, batch
    gathers = (D - 1) * B * (s.features + 2 * s.units) + B * (s.classes - _first_block(s.classes, D))
    items = [("input rows to devices 1..D-1", (B - _first_block(B, D)) * s.image * FLOAT),
             ("all-gathers (pool5, fc6, fc7) and logits, forward", gathers * FLOAT),
             ("their gradients, backward", gathers * FLOAT),
             ("conv weights read by the D-1 other devices", (D - 1) * s.conv_params * FLOAT),
             ("their gradients, to the variable's device", (D - 1) * s.conv_params * FLOAT)]
    if not stored:
        moved = _fc_blocks_elsewhere(s, D)
        items += [("fc weight blocks held by another device", moved * FLOAT),
                  ("their gradients", moved * FLOAT)]
    return items


def _fc_blocks_elsewhere(s, D):
    """Values of the fc kernels and biases that device d reads from a variable on another device: fc6 and
    fc7 are one variable per tower, tower t's on device t·D/T (distribute.setup); fc8 one, on device 0."""
    T = s.towers
    layers = [(s.features, [(t * s.units // T, (t + 1) * s.units // T, t * D // T) for t in range(T)]),
              (s.units, [(t * s.units // T, (t + 1) * s.units // T, t * D // T) for t in range(T)]),
              (s.units, [(0, s.classes, 0)])]
    moved = 0
    for rows, parts in layers:
        columns = parts[-1][1]
        for d in range(D):
            lo, hi = columns * d // D, columns * (d + 1) // D
            for a, b, home in parts:
                if home != d:
                    moved += (rows + 1) * max(0, min(hi, b) - max(lo, a))
    return moved


def total(items):
    return sum(b for _, b in items)


def table(m, batch=128, devices=(2, 4, 8)):
    """Markdown rows: MB per step, summed over the devices, for each strategy and device count: the
    traffic between devices, then (+ ...) the input images leaving device 0 (each list's first item)."""
    s = shapes(m)
    head = "| strategy | " + " | ".join(f"D = {d}" for d in devices) + " |"
    rows = [head, "|---|" + "---|" * len(devices)]

    def cell(items):
        return f"{(total(items) - items[0][1]) / 1e6:.1f} MB (+ {items[0][1] / 1e6:.1f})"

    for name, of in [("`mirrored`", lambda d: mirrored(s, batch, d)),
                     ("`towers`", lambda d: towers(s, batch) if d == 2 else None),
                     ("`hybrid`", lambda d: hybrid(s, batch, d)),
                     ("`hybrid`, fc blocks stored where computed (the paper's)", lambda d: hybrid(s, batch, d, stored=True))]:
        rows.append(f"| {name} | " + " | ".join(cell(of(d)) if of(d) else "—" for d in devices) + " |")
    return rows


def main():
    """`python -m alexnet_tf.perf.traffic`: the table, then each strategy's items at the first device count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--devices", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    from alexnet_tf.config import load_config
    m = load_config(args.config, args.set).model
    print("\n".join(table(m, args.batch, args.devices)))
    s, d = shapes(m), args.devices[0]
    for name, items in [("mirrored", mirrored(s, args.batch, d)), ("towers", towers(s, args.batch)),
                        ("hybrid", hybrid(s, args.batch, d))]:
        print(f"\n{name}, D = {d if name != 'towers' else 2}, batch {args.batch}:")
        for what, b in items:
            print(f"  {b / 1e6:10.3f} MB  {what}")


if __name__ == "__main__":
    main()
