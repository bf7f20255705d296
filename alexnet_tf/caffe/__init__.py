"""BVLC Caffe's bvlc_alexnet as a run of this project (`python -m alexnet_tf import-caffe`, docs/caffe.md).

    proto.py     Caffe's files read without Caffe: .caffemodel, .binaryproto, .prototxt
    weights.py   the check that a net is bvlc_alexnet's, and its blobs onto the two-tower model
    importer.py  the run directory: config, model.keras, mean, classes, export
"""
