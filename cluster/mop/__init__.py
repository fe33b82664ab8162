"""Model hopper parallelism on Ray: worker actors that hold one data partition each, the
Cerebro scheduler, and the driver loop with checkpoints and resume."""
