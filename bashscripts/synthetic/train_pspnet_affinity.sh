#!/bin/bash
# The two-stage affinity pipeline of bashscripts/voc12/train_pspnet_affinity.sh on generated synthetic VOC data (CPU, minutes).
# Usage (from the repository root): bash bashscripts/synthetic/train_pspnet_affinity.sh
MODE=affinity
source "$(dirname "$0")/../lib/synthetic_voc12.sh"
