"""The one compiled part of qbench: qbench.quant._cpu_kernels (RAND's per-row top-k and the 16-bit
uniform noise on the CPU, see its source). Optional: where no C compiler is at hand the install goes
on without it and qbench uses numpy's and torch's ops instead (the same values, slower). Everything
else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "qbench.quant._cpu_kernels",
            ["qbench/quant/_cpu_kernels.c"],
            # no fused multiply-add: the kernels repeat numpy's and torch's float steps exactly
            extra_compile_args=["-O3", "-ffp-contract=off", "-Wno-psabi"],
            optional=True,
        )
    ]
)
