import numpy as np
import pytest
import tensorflow as tf

from a2gnn.train import (train_with_crf_loss, train_with_mp_crf_loss, train_with_mp_nocrf_loss,
                         train_with_nocrf_loss)


def _run(name, ins, args):
    f_h, f_w = args['f_h'], args['f_w']
    sample = {'rgb': ins['rgb']}
    if name == 'a2g_train_with_nocrf':
        return train_with_nocrf_loss(ins['x_t'], ins['seed'], f_h, f_w)
    if name == 'a2g_train_with_crf':
        return train_with_crf_loss(ins['x_t'], ins['seed'], f_h, f_w, sample)
    if name == 'a2g_train_with_mp_nocrf':
        return train_with_mp_nocrf_loss(ins['x_t'], ins['fts_t'], ins['seed'], f_h, f_w, ins['boxes'],
                                        ins['box_class'])
    return train_with_mp_crf_loss(ins['x_t'], ins['fts_t'], ins['seed'], f_h, f_w, sample, ins['boxes'],
                                  ins['box_class'])


@pytest.mark.parametrize('name', ['a2g_train_with_nocrf', 'a2g_train_with_crf', 'a2g_train_with_mp_nocrf',
                                  'a2g_train_with_mp_crf'])
def test_step_losses_match_golden(a2g, check_output, name):
    ins, outs, case = a2g(name)
    ins['x_t'], ins['fts_t'] = tf.constant(ins['x']), tf.constant(ins['fts'])
    with tf.GradientTape() as tape:
        tape.watch([ins['x_t'], ins['fts_t']])
        result = _run(name, ins, case['args'])
    for key, value in result.items():
        check_output(case, outs, key, value)
    grad_x, grad_fts = tape.gradient(result['loss'], [ins['x_t'], ins['fts_t']])
    check_output(case, outs, 'grad_x', grad_x)
    if 'grad_fts' in outs:
        check_output(case, outs, 'grad_fts', grad_fts)
