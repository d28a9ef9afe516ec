"""segsort.eval_utils against the original's golden outputs."""
import numpy as np
import pytest

from segsort import eval_utils


def test_find_majority_label_index_golden(golden, assert_golden):
    ins, outs, case = golden('segsort_find_majority_label_index')
    select, majority = eval_utils.find_majority_label_index(ins['labels'], ins['cluster_labels'])
    assert select.dtype.name == 'int64' and majority.dtype.name == 'int32'
    assert_golden(select.numpy(), outs['select_pixels'], case['tolerance']['out_select_pixels'])
    assert_golden(majority.numpy(), outs['majority_labels'], case['tolerance']['out_majority_labels'])


def test_extract_trained_prototypes_golden(golden, assert_golden):
    ins, outs, case = golden('segsort_extract_trained_prototypes')
    s = case['scalars']
    feats, sem, inst = eval_utils.extract_trained_prototypes(
        ins['embedding'], ins['location_features'], ins['cluster_labels'], s['num_clusters'],
        s['kmeans_iterations'], ins['panoptic_labels'], s['panoptic_label_divisor'], s['ignore_label'],
        s['evaluate_semantic_or_panoptic'])
    tol = case['tolerance']
    assert_golden(feats.numpy(), outs['prototype_features'], tol['out_prototype_features'])
    assert_golden(sem.numpy(), outs['prototype_semantic_labels'], tol['out_prototype_semantic_labels'])
    assert_golden(inst.numpy(), outs['prototype_instance_labels'], tol['out_prototype_instance_labels'])


def test_k_nearest_neighbors_golden(golden, assert_golden):
    ins, outs, case = golden('segsort_k_nearest_neighbors')
    pred = eval_utils.k_nearest_neighbors(ins['k_predictions'], ins['prototype_labels'])
    assert_golden(pred.numpy(), outs['predictions'], case['tolerance']['out_predictions'])


@pytest.mark.parametrize('name', ['segsort_predict_semantic_instance_labels',
                                  'segsort_predict_semantic_instance_labels_no_instances'])
def test_predict_semantic_instance_labels_golden(golden, assert_golden, name):
    ins, outs, case = golden(name)
    sem, inst = eval_utils.predict_semantic_instance_labels(
        ins['cluster_labels'], ins['test_prototypes'], ins['prototype_features'], ins['prototype_semantic_labels'],
        ins.get('prototype_instance_labels'), case['scalars']['k'])
    assert_golden(sem.numpy(), outs['semantic_predictions'], case['tolerance']['out_semantic_predictions'])
    if 'instance_predictions' in outs:
        assert_golden(inst.numpy(), outs['instance_predictions'], case['tolerance']['out_instance_predictions'])
    else:
        assert inst is None


def test_predict_rejects_mismatched_embedding_dimension():
    with pytest.raises(ValueError, match='embedding dimension 4 does not match the 8-dimensional'):
        eval_utils.predict_semantic_instance_labels(np.zeros([1, 2, 2], np.int64), np.ones([1, 4], np.float32),
                                                    np.ones([3, 8], np.float32), np.zeros([3], np.int32), None, 1)
