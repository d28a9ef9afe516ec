#!/bin/bash
# The two-stage aaf pipeline of bashscripts/voc12/train_pspnet_aaf.sh on generated synthetic VOC data (CPU, minutes).
# Usage (from the repository root): bash bashscripts/synthetic/train_pspnet_aaf.sh
MODE=aaf
source "$(dirname "$0")/../lib/synthetic_voc12.sh"
