"""Homes outside ima's own training loop (nnU-Net v2: :mod:`ima.integrations.nnunet`).
They call the library's attacks, methods and evaluation, never copies of them."""
