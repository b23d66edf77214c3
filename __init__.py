"""lightwork: learn to localise anomalies in medical images from synthetic anomaly tasks.

Subpackages:
    anomalies    the five synthetic anomaly tasks and the soft labeller (pure numpy/scipy)
    data         readers, preprocessing recipes, manifests, storage URIs (no Ray)
    models       the U-Net and positional encoding (pure torch)
    training     the training/validation loop, schedule and checkpoints (pure torch)
    evaluation   metrics and reports (numpy/scikit-learn)
    distributed  everything that knows about Ray: streaming, Train, Tune, batch inference
    jobs         command-line and Ray job entry points: parse arguments, call the library
"""

__version__ = "0.1.0"
