"""Batched library prediction (DataLoader, devices, AMP) that reuses the runtime's pieces."""
