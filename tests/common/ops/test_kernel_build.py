"""The shared build machinery: the XLA-context check and the 'auto' decision with its one log line."""
import logging

import tensorflow as tf

from common.ops.kernel_build import COMPILER_ENV, CACHE_ENV, OpLibrary, in_xla_context


def test_in_xla_context_only_while_tracing_a_jit_compiled_function():
    seen = {}

    @tf.function(jit_compile=True)
    def compiled(x):
        seen['jit'] = in_xla_context()
        return x + 1

    @tf.function
    def traced(x):
        seen['graph'] = in_xla_context()
        return x + 1

    compiled(tf.constant(1.0))
    traced(tf.constant(1.0))
    assert seen == {'jit': True, 'graph': False} and not in_xla_context()


def test_serves_auto_falls_back_with_one_warning_per_library(monkeypatch, tmp_path, caplog):
    source = tmp_path / 'op.cc'
    source.write_text('// never built\n')
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / 'cache'))
    monkeypatch.setenv(COMPILER_ENV, 'no-such-compiler-xyz')
    library = OpLibrary('test_op', str(source))
    logger = logging.getLogger('test_kernel_build')
    with caplog.at_level(logging.WARNING, logger='test_kernel_build'):
        assert [library.serves_auto(logger, 'test op unavailable (%s)') for _ in range(3)] == [False] * 3
        assert len(caplog.records) == 1 and 'no C++ compiler' in caplog.records[0].getMessage()
        library.reset_for_tests()  # a new attempt is logged again
        assert not library.serves_auto(logger, 'test op unavailable (%s)')
        assert len(caplog.records) == 2
