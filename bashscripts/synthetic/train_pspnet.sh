#!/bin/bash
# The two-stage baseline pipeline of bashscripts/voc12/train_pspnet.sh on generated synthetic VOC data (CPU, minutes).
# Usage (from the repository root): bash bashscripts/synthetic/train_pspnet.sh
MODE=baseline
source "$(dirname "$0")/../lib/synthetic_voc12.sh"
