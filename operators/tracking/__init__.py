"""Tracking: per-camera identities of detections (:mod:`operators.tracking.tracker`)."""
