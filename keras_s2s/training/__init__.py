"""Training: the run configuration and its options (`config`), the one training loop
(`loop`), what it optimizes (`objectives`), checkpoint averaging (`averaging`) and the cluster
of multi-worker training (`multi_worker`).

`keras_s2s.training.config` imports no TensorFlow (the CLI's parser reads it); import the other
modules for the rest.
"""
