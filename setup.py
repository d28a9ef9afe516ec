"""affinity-seg: TF2/Keras 3 ports of AAF, SegSort, AffinityNet (PSA) and A2GNN."""
from setuptools import find_packages, setup

TF_VERSION = "2.21.*"

setup(
    name="affinity-seg",
    version="0.1.0",
    description=("Faithful TensorFlow 2 / Keras 3 reimplementation of AAF, SegSort, "
                 "AffinityNet (PSA) and A2GNN semantic segmentation."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["common", "common.*", "aaf", "aaf.*", "segsort", "segsort.*",
                                    "affinitynet", "affinitynet.*", "a2gnn", "a2gnn.*"]),
    include_package_data=True,
    # C++ sources of the affinity-field, SegSort and A2GNN kernels, compiled on first use
    # (common/ops/affinity_kernel.py, segsort/kernel.py, a2gnn/gnn_kernel.py).
    package_data={"common.ops": ["kernels/*.cc"], "segsort": ["kernels/*.cc"], "a2gnn": ["kernels/*.cc"]},
    # TensorFlow itself comes from one of the extras so that CPU-only machines do not pull CUDA wheels
    # and GPU machines do not end up with two TensorFlow distributions side by side.
    install_requires=[
        "numpy>=1.26",
        "scipy>=1.11",
        "pillow>=10.0",
        "opencv-python-headless>=4.8",
        "tqdm>=4.66",
        "absl-py>=2.0",
        "tensorboard>=2.16",  # to view the training summaries (tensorflow-cpu does not pull it in)
        "pydensecrf2>=1.1",
        "scikit-image>=0.22",  # segsort.overseg: SLIC / Felzenszwalb over-segmentations (HED-owt-ucm substitute)
        "matplotlib>=3.7",  # affinitynet.evaluate's sweep curve
    ],
    extras_require={
        "tf": [f"tensorflow=={TF_VERSION}"],
        "cpu": [f"tensorflow-cpu=={TF_VERSION}"],
        "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
        "cityscapes": ["cityscapesscripts>=2.2"],
        "test": ["pytest>=8.0", "cityscapesscripts>=2.2", "hypothesis>=6.100"],
    },
    entry_points={
        "console_scripts": [
            "aaf-train=aaf.train:run",
            "aaf-train-affinity=aaf.train:run_affinity",
            "aaf-train-aaf=aaf.train:run_aaf",
            "aaf-inference=aaf.inference:run",
            "aaf-inference-msc=aaf.inference_msc:run",
            "aaf-benchmark=aaf.benchmark:run",
            "aaf-encode-cityscapes-testid=aaf.encode_cityscapes_testid:run",
            "aaf-quickstart=aaf.quickstart:run",
            "segsort-train=segsort.train:run",
            "segsort-train-unsup=segsort.train_unsup:run",
            "segsort-extract-prototypes=segsort.extract_prototypes:run",
            "segsort-inference=segsort.inference:run",
            "segsort-inference-msc=segsort.inference_msc:run",
            "segsort-overseg=segsort.overseg:run",
            "segsort-quickstart=segsort.quickstart:run",
            "psa-make-cls-labels=affinitynet.make_cls_labels:run",
            "psa-train-cls=affinitynet.train_cls:run",
            "psa-infer-cls=affinitynet.infer_cls:run",
            "psa-train-aff=affinitynet.train_aff:run",
            "psa-infer-aff=affinitynet.infer_aff:run",
            "psa-evaluate=affinitynet.evaluate:run",
            "psa-crf-labels=affinitynet.crf_labels:run",
            "a2gnn-infer-seam=a2gnn.infer_seam:run",
            "a2gnn-train-gated-aff=a2gnn.train_gated_aff:run",
            "a2gnn-train-infer-box=a2gnn.train_infer_box:run",
            "a2gnn-train-infer-others=a2gnn.train_infer_others:run",
            "a2gnn-quickstart=a2gnn.quickstart:run",
            "affinity-seg-synthetic=common.data.synthetic:run",
            "affinity-seg-datasets=common.data.datasets:run",
            "affinity-seg-benchmark=common.eval.benchmark:run",
            "affinity-seg-export=common.infer.export:run",
        ],
    },
)
