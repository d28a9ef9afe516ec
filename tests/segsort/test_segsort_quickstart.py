"""Fast checks of `segsort.quickstart`: its program command lines parse with the programs' own flags and agree
with each other (the checkpoint training writes is the one the later steps read, with the same network). The full
quick start (~4 minutes) is not run here; `test_train.py` trains the same programs end to end on a smaller scale."""
from absl import flags

import segsort.extract_prototypes as extract
import segsort.inference as inference
import segsort.quickstart as quickstart
import segsort.train as train
from common.cli import normalize_flag_names

SHARED = ('model', 'backbone_filters', 'backbone_blocks', 'psp_channels', 'bn_decay', 'embedding_dim',
          'num_clusters', 'kmeans_iterations')


def parse(define, args):
    flag_values = flags.FlagValues()
    define(flag_values)
    flag_values(normalize_flag_names(['prog'] + [str(a) for a in args]))
    return flag_values


def test_pipeline_commands_parse_and_chain(monkeypatch):
    monkeypatch.setattr(quickstart, 'FLAGS', parse(quickstart.define_flags, ['--num_steps=7', '--crop_size=48']))
    (train_args, _), (extract_args, _), (infer_args, _) = quickstart.pipeline_commands('/data', '/snap')
    assert [train_args[0], extract_args[0], infer_args[0]] == ['segsort.train', 'segsort.extract_prototypes',
                                                               'segsort.inference']
    train_flags = parse(train.define_flags, train_args[1:])
    extract_flags = parse(extract.define_flags, extract_args[1:])
    infer_flags = parse(lambda fv: inference.define_flags(False, fv), infer_args[1:])
    # Steps run 0..num_steps-1 and the engine saves when step % save_pred_every == 0 and step > 0.
    last_step = train_flags.num_steps - 1
    assert last_step % train_flags.save_pred_every == 0
    checkpoint = f'{train_flags.snapshot_dir}/model.ckpt-{last_step}'
    assert extract_flags.restore_from == infer_flags.restore_from == checkpoint
    assert infer_flags.prototype_dir == extract_flags.save_dir + '/prototypes'
    for name in SHARED:
        assert getattr(train_flags, name) == getattr(extract_flags, name) == getattr(infer_flags, name), name
    assert train_flags.data_list.endswith('train+.txt') and infer_flags.data_list.endswith('val.txt')
    assert train_flags.num_banks == 2 and train_flags.deterministic and train_flags.is_training
    size = int(infer_flags.input_size.split(',')[0])
    assert size % 48 == 0 and size >= 160  # the canvas holds every synthetic image (at most 160 px)
