"""A pytest plugin for mutation runs only: JAX's persistent compilation cache on the CPU.

Every mutant runs its tests in a fresh process, which compiles every XLA program of those tests again,
although a mutant changes at most the programs that trace the mutated function. JAX 0.4.25 (the pinned
neural-tangents stack) keeps its persistent cache for TPU and GPU only (``jax._src.compiler``: CPU was
disabled until cache keys carry the CPU's features, which cannot differ inside one run on one machine).
This plugin presents the CPU backend to that check as a supported platform, so each program is compiled
once per module run and read back from ``$JAX_COMPILATION_CACHE_DIR`` afterwards; a mutated program has
another key (its HLO differs) and is compiled afresh. Measured on 2 cores: tests/test_reconstruction.py
26.5 s -> 11.7 s once warm; the I-BAU tests 32 -> 19 s.

Loaded by ``bench/mutation.py`` through ``PYTEST_ADDOPTS=-p jax_cpu_cache``; never by the test suite.
"""
import jax._src.compiler as _compiler

_compile_or_get_cached = _compiler.compile_or_get_cached


class _CacheablePlatform:
    """The backend, unchanged but for the platform name the cache's check reads."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    platform = property(lambda self: "gpu")


def compile_or_get_cached(backend, *args, **kwargs):
    if getattr(backend, "platform", None) == "cpu":
        backend = _CacheablePlatform(backend)
    return _compile_or_get_cached(backend, *args, **kwargs)


_compiler.compile_or_get_cached = compile_or_get_cached
