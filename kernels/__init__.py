"""Triton kernels for srlm-fast (standalone: never imports srlm_fast)."""
