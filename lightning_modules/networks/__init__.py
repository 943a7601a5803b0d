"""Plain-PyTorch networks: StyleGAN2 generator, audio encoder."""
