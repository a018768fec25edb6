"""The Llama network and everything that describes it on disk: config, checkpoints, tokenizer.

Imports only `srlm_kernels` and torch; no parallelism code lives here (FSDP is applied from outside).
"""
