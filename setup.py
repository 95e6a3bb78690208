"""The one compiled part of qbench: qbench.quant._rowtopk (RAND's per-row top-k on the CPU, see its
source). Optional: where no C compiler is at hand the install goes on without it and qbench uses
torch's ops instead (the same columns, slower). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "qbench.quant._rowtopk",
            ["qbench/quant/_rowtopk.c"],
            extra_compile_args=["-O3", "-Wno-psabi"],
            optional=True,
        )
    ]
)
