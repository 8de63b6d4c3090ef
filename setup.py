"""The optional C part (`dispatcher._native`); everything else is in pyproject.toml.

The extension is optional: where it does not build (no C compiler), the install goes on
and `dispatcher.native` falls back to the numpy code that gives the same answers.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dispatcher._native",
            sources=["csrc/native.c"],
            include_dirs=["csrc"],
            optional=True,
        )
    ]
)
