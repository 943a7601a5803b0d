"""StyleGAN2's fused ops (bias_act, upfirdn2d): reference PyTorch, C++ and CUDA kernels."""
