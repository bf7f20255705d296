"""Custom TensorFlow ops in C++: the fused LRN (lrn_op.cc, built by build.py, used through fused_lrn.py)."""
