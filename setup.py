"""Build the compiled core. Compiler directives live here, once, for every module."""

from Cython.Build import cythonize
from setuptools import Extension, setup

CORE_MODULES = ("frames", "mask", "bucket", "gate", "legs")

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}

extensions = [
    Extension(
        f"wsgw._core.{name}",
        [f"wsgw/_core/{name}.pyx"],
        extra_compile_args=["-O3"],
    )
    for name in CORE_MODULES
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES))
