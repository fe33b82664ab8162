"""Detector operators: frames in, one pixel patch per detected object out (NanoDet-m, HOG, user models)."""
