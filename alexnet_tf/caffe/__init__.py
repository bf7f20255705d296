"""BVLC Caffe's bvlc_alexnet as a run of this project (`python -m alexnet_tf import-caffe`, docs/caffe.md).

    proto.py     Caffe's files read without Caffe: .caffemodel, .binaryproto, .prototxt, into records
    schema.py    caffe.proto as read here: the messages' fields, enum names, V1 layer types
    wire.py      the protobuf binary wire format, decoded by the schema
    text_format.py  the protobuf text format of a .prototxt
    weights.py   the check that a net is bvlc_alexnet's, and its blobs onto the two-tower model
    importer.py  the run directory: config, model.keras, mean, classes, export
"""

from alexnet_tf.errors import UserError


class CaffeFileError(UserError, ValueError):
    """A Caffe file that cannot be read: not Caffe's format, truncated, or not AlexNet. One line."""
