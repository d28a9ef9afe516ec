"""Shared tensor ops: affinity-field neighbours (`affinity`, reference) and the fused AFF/AAF loss
(`affinity_fused`)."""
