"""Build the compiled core. Compiler directives live here, once, for every module."""

from Cython.Build import cythonize
from setuptools import Extension, setup

CORE_MODULES = ("frames", "mask", "bucket", "gate", "legs", "inflate")
# The inflate meter calls zlib's C API (zlib1g-dev: the same zlib CPython links).
LIBRARIES = {"inflate": ["z"]}

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
        libraries=LIBRARIES.get(name, []),
    )
    for name in CORE_MODULES
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES))
