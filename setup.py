"""The C extension's build; everything else about the package is in pyproject.toml.

(setuptools' ``ext-modules`` table in pyproject.toml is still experimental.)
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("schemas._records", ["schemas/_records.c"]),
        Extension("schemas._encoder", ["schemas/_encoder.c"]),
        Extension("schemas._converter", ["schemas/_converter.c"]),
        Extension("uplink._partition", ["uplink/_partition.c"]),
    ]
)
