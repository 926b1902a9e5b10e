"""Evaluation of trained models on the test split: one module per model (the VAE today; the CNN,
U-Net, super-resolution networks and the deblender add theirs). Generic image metrics are in
:mod:`sourcelens.metrics`."""
