#!/bin/bash
# bashscripts/voc12/a2gnn_image.sh on a generated synthetic VOC set (seed folder SEAM_Image from common.data.synthetic),
# with a reduced ResNet-38 trained from scratch, reduced GNN schedules and a reduced DeepLab, on CPU.
# Usage (repository root): bash bashscripts/synthetic/a2gnn_image.sh   (override e.g. OUT, NUM_IMAGES, SIZE)
SUPERVISION=image
SEED_FOLDER=SEAM_Image
source "$(dirname "$0")/../lib/synthetic_a2gnn.sh"
