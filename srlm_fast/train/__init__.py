"""The SFT/DPO training loop on FSDP2: its config, data, losses, DPO reference log-probs and metrics."""
