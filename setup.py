"""Builds StreamVision's one C extension; everything else is declared in pyproject.toml.

The SQ8 scan kernel is optional: without a C compiler the install still succeeds and SQ8
shards scan with FAISS's own (slower) code; a shard's ``stats()["scan_kernel"]`` says
which is in use, and the test suite fails on a build without it.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "operators.index._sq8scan",
            sources=["operators/index/_sq8scan.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
