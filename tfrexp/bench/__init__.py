"""`tfrexp-bench`: our writer, input pipelines, training and start-up against the obvious way of doing the
same work, on this machine, in one run. One module per case; `measure` holds what they share, `walkthrough`
the baselines, `cli` the command and its report."""

import os

# TensorFlow's C++ start-up lines (CUDA probing, oneDNN notices) stay out of the report, as in `tfrexp`.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
