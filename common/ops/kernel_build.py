"""Compile-on-first-use C++ TensorFlow op libraries: the build machinery shared by the project's CPU kernels.

`OpLibrary(name, source)` compiles `source` with g++ (or `$AFFINITY_SEG_CXX`) and the `tf.sysconfig` flags into the
kernel cache (`$AFFINITY_SEG_CACHE` or `~/.cache/affinity-seg/`), keyed by a hash of the source,
flags, compiler and TensorFlow version, written under a temporary name and renamed atomically (concurrent builders
never load a half-written library), then loads it with `tf.load_op_library`, once per process. `load()` returns
None when that fails (no compiler, incompatible headers, load error) and remembers why (`unavailable_reason()`), so
that callers fall back to their TensorFlow implementation after one log line.
"""
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import tensorflow as tf

__all__ = ['CACHE_ENV', 'COMPILER_ENV', 'KernelUnavailableError', 'OpLibrary', 'cache_dir', 'in_xla_context',
           'vector_flags']

CACHE_ENV = 'AFFINITY_SEG_CACHE'
COMPILER_ENV = 'AFFINITY_SEG_CXX'


class KernelUnavailableError(RuntimeError):
    """A compiled kernel could not be built or loaded (the message says why)."""


def in_xla_context():
    """True while tracing a function that XLA will compile (jit_compile=True): the C++ ops have no XLA kernels."""
    try:
        from tensorflow.python.ops import control_flow_util  # no public equivalent
        return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    except (ImportError, AttributeError):  # a TensorFlow without it: assume no XLA context
        return False


def cache_dir():
    """Directory of the compiled libraries: $AFFINITY_SEG_CACHE or ~/.cache/affinity-seg."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache', 'affinity-seg')


def _cpu_flag_set():
    try:
        with open('/proc/cpuinfo') as f:
            return set(next((line.split(':', 1)[1].split() for line in f if line.startswith('flags')), []))
    except OSError:
        return set()


def vector_flags(avx512=False):
    """Instruction-set flags for this CPU: AVX-512 F/BW/DQ/VL if asked for and present, else AVX2 + FMA if present.

    Never -march=native: TensorFlow's Eigen headers do not compile with AVX512-FP16 enabled.
    """
    flags = _cpu_flag_set()
    chosen = []
    if {'avx2', 'fma'} <= flags:
        chosen += ['-mavx2', '-mfma']
    if avx512 and {'avx512f', 'avx512bw', 'avx512dq', 'avx512vl'} <= flags:
        chosen += ['-mavx512f', '-mavx512bw', '-mavx512dq', '-mavx512vl']
    return chosen


class OpLibrary:
    """One C++ source file of TensorFlow ops, compiled into the cache on first use and loaded once per process.

    Args:
      name: library name (cache file prefix, messages).
      source: path of the .cc file.
      flags: extra compiler flags (e.g. `vector_flags()`).
    """

    def __init__(self, name, source, flags=()):
        self.name, self.source, self.flags = name, source, list(flags)
        self._lock = threading.Lock()
        self._state = {'module': None, 'error': None, 'tried': False, 'fallback_logged': False}

    def build_command(self, compiler, output):
        return ([compiler, '-O3', '-std=c++17', '-fPIC', '-shared', '-fno-trapping-math', '-w'] + self.flags
                + [self.source, '-o', output] + tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags())

    def library_path(self, compiler='g++'):
        """Cache path of the library for this source, compiler flags and TensorFlow version."""
        with open(self.source, 'rb') as f:
            source = f.read()
        key = hashlib.sha256(source + repr((self.build_command(compiler, ''), tf.__version__,
                                            tf.sysconfig.get_build_info().get('cpu_compiler', ''))).encode())
        return os.path.join(cache_dir(), f'{self.name}_{tf.__version__}_{key.hexdigest()[:16]}.so')

    def build(self, compiler=None):
        """Compiles the library into the cache if it is not there yet; returns its path.

        Raises:
          KernelUnavailableError: no compiler on PATH or the compilation failed (with the compiler's last lines).
        """
        compiler = compiler or os.environ.get(COMPILER_ENV, 'g++')
        if shutil.which(compiler) is None:
            raise KernelUnavailableError(f'no C++ compiler {compiler!r} on PATH')
        path = self.library_path(compiler)
        if os.path.exists(path):
            return path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle, partial = tempfile.mkstemp(suffix='.so.partial', dir=os.path.dirname(path))
        os.close(handle)
        try:
            result = subprocess.run(self.build_command(compiler, partial), capture_output=True, text=True,
                                    check=False)
            if result.returncode != 0:
                raise KernelUnavailableError(f'{compiler} failed ({result.returncode}): '
                                             f'{result.stderr.strip()[-1500:]}')
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        return path

    @tf.autograph.experimental.do_not_convert
    def load(self, raise_errors=False):
        """The loaded op module, building it on first use; None (or KernelUnavailableError) when unavailable.

        The outcome is remembered for the process: a failed build is not retried on every call.
        """
        with self._lock:
            if not self._state['tried']:
                self._state['tried'] = True
                try:
                    self._state['module'] = tf.load_op_library(self.build())
                except (KernelUnavailableError, tf.errors.OpError, OSError) as error:
                    self._state['error'] = f'{type(error).__name__}: {error}'
        if self._state['module'] is None and raise_errors:
            raise KernelUnavailableError(f'{self.name} kernel unavailable: {self._state["error"]}')
        return self._state['module']

    @tf.autograph.experimental.do_not_convert
    def serves_auto(self, logger, message):
        """Whether impl='auto' should run these compiled (CPU) ops here: no visible GPU, not inside a function XLA
        compiles, and the library loads. The first time it does not load, logs `message % reason` once on `logger`
        (the caller's module logger; `message` names the kernel and the fallback).
        """
        if tf.config.list_logical_devices('GPU') or in_xla_context():
            return False
        if self.load() is not None:
            return True
        with self._lock:
            first, self._state['fallback_logged'] = not self._state['fallback_logged'], True
        if first:
            logger.warning(message, self.unavailable_reason())
        return False

    def unavailable_reason(self):
        """Why the library is unavailable (None if it loaded or was never tried)."""
        return self._state['error']

    def reset_for_tests(self):
        """Forgets the load outcome so a test can simulate a failing or succeeding build."""
        with self._lock:
            self._state.update(module=None, error=None, tried=False, fallback_logged=False)
