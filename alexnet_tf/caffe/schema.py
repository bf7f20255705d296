"""caffe.proto as this package reads it (field numbers of BVLC/caffe's src/caffe/proto/caffe.proto).

Only the messages and fields an AlexNet file needs; the decoder skips every other field.
"""

# The fields read here, {field number: (name, kind)} per message.
# Kinds: "string", "int" (varint: uint32/int32/int64/bool/enum), "float" (fixed32), "floats" (packed
# float, as an array), "doubles" (packed double), or the name of a message. Other fields are skipped.
MESSAGES = {
    "NetParameter": {1: ("name", "string"), 2: ("layers", "V1LayerParameter"), 3: ("input", "string"),
                     4: ("input_dim", "int"), 8: ("input_shape", "BlobShape"), 100: ("layer", "LayerParameter")},
    "LayerParameter": {1: ("name", "string"), 2: ("type", "string"), 3: ("bottom", "string"), 4: ("top", "string"),
                       7: ("blobs", "BlobProto"), 100: ("transform_param", "TransformationParameter"),
                       106: ("convolution_param", "ConvolutionParameter"),
                       117: ("inner_product_param", "InnerProductParameter"), 118: ("lrn_param", "LRNParameter"),
                       121: ("pooling_param", "PoolingParameter"), 123: ("relu_param", "ReLUParameter"),
                       143: ("input_param", "InputParameter")},
    "V1LayerParameter": {1: ("layer", "V0LayerParameter"), 2: ("bottom", "string"), 3: ("top", "string"),
                         4: ("name", "string"), 5: ("type", "int"), 6: ("blobs", "BlobProto"),
                         10: ("convolution_param", "ConvolutionParameter"),
                         17: ("inner_product_param", "InnerProductParameter"), 18: ("lrn_param", "LRNParameter"),
                         19: ("pooling_param", "PoolingParameter"), 30: ("relu_param", "ReLUParameter"),
                         36: ("transform_param", "TransformationParameter")},
    "V0LayerParameter": {1: ("name", "string")},
    "BlobProto": {1: ("num", "int"), 2: ("channels", "int"), 3: ("height", "int"), 4: ("width", "int"),
                  5: ("data", "floats"), 7: ("shape", "BlobShape"), 8: ("double_data", "doubles")},
    "BlobShape": {1: ("dim", "int")},
    "ConvolutionParameter": {1: ("num_output", "int"), 2: ("bias_term", "int"), 3: ("pad", "int"),
                             4: ("kernel_size", "int"), 5: ("group", "int"), 6: ("stride", "int"),
                             9: ("pad_h", "int"), 10: ("pad_w", "int"), 11: ("kernel_h", "int"), 12: ("kernel_w", "int"),
                             13: ("stride_h", "int"), 14: ("stride_w", "int"), 16: ("axis", "int"), 18: ("dilation", "int")},
    "InnerProductParameter": {1: ("num_output", "int"), 2: ("bias_term", "int"), 5: ("axis", "int"),
                              6: ("transpose", "int")},
    "LRNParameter": {1: ("local_size", "int"), 2: ("alpha", "float"), 3: ("beta", "float"),
                     4: ("norm_region", "int"), 5: ("k", "float")},
    "PoolingParameter": {1: ("pool", "int"), 2: ("kernel_size", "int"), 3: ("stride", "int"), 4: ("pad", "int"),
                         5: ("kernel_h", "int"), 6: ("kernel_w", "int"), 7: ("stride_h", "int"), 8: ("stride_w", "int"),
                         9: ("pad_h", "int"), 10: ("pad_w", "int"), 12: ("global_pooling", "int"),
                         13: ("round_mode", "int")},
    "ReLUParameter": {1: ("negative_slope", "float")},
    "InputParameter": {1: ("shape", "BlobShape")},
    "TransformationParameter": {1: ("scale", "float"), 2: ("mirror", "int"), 3: ("crop_size", "int"),
                                5: ("mean_value", "float")},
}

# The protobuf wire type of each scalar kind (a message is length-delimited: 2).
WIRE_TYPES = {"string": 2, "int": 0, "float": 5, "floats": 2, "doubles": 2}

# The layer fields that hold a layer type's parameter message.
PARAM_FIELDS = ("convolution_param", "inner_product_param", "lrn_param", "pooling_param", "relu_param")

# Enum values by name, for the text format (binary files hold the numbers).
ENUMS = {
    "pool": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2},
    "norm_region": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1},
    "round_mode": {"CEIL": 0, "FLOOR": 1},
}

# V1LayerParameter.LayerType -> LayerParameter.type, for the layer types an AlexNet file holds;
# any other V1 type keeps its enum name (it is only reported, never run).
V1_TYPES = {0: "NONE", 1: "Accuracy", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout", 8: "Flatten",
            12: "ImageData", 14: "InnerProduct", 15: "LRN", 17: "Pooling", 18: "ReLU", 20: "Softmax",
            21: "SoftmaxWithLoss", 22: "Split", 29: "MemoryData", 32: "DummyData", 36: "Silence"}
_V1_NAMES = {"ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3, "CONTRASTIVE_LOSS": 37,
             "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6, "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7,
             "ELTWISE": 25, "EXP": 38, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28,
             "IM2COL": 11, "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
             "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18, "SIGMOID": 19,
             "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22,
             "SLICE": 33, "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31}
_V1_BY_NUMBER = {v: k for k, v in _V1_NAMES.items()}


def v1_type(value):
    """A V1LayerParameter.type (enum number, or its name in a prototxt) -> the current type string."""
    number = _V1_NAMES.get(value, value) if isinstance(value, str) else value
    return V1_TYPES.get(number) or _V1_BY_NUMBER.get(number, f"V1 type {value}")
