"""The KV-cached batched generator: one Llama forward (the model's), sampling, the native sampling op, and the
torchrun generation modes (data-parallel replicas or a sharded model in lockstep)."""
