"""Model selection building blocks, Ray-free: architectures, the model selection table,
one deterministic sub-epoch of training, evaluation, checkpoints and the exported classifier.

``cluster.mop`` runs these on Ray worker actors with model hopper parallelism.
"""
