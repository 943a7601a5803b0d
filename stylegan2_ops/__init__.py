"""StyleGAN2's fused ops (bias_act, upfirdn2d): reference PyTorch, C++ and CUDA kernels.

Kernels are JIT-compiled on first use (never at import); `impl='auto'` picks CUDA for CUDA tensors, C++ for CPU
tensors and the pure-PyTorch reference when no build is available. Force one with $STYLEGAN2_OPS_IMPL=ref|cpp|cuda.
"""

from stylegan2_ops.bias_act import ACTIVATIONS, bias_act, fused_leaky_relu
from stylegan2_ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = [
    "ACTIVATIONS",
    "bias_act",
    "downsample2d",
    "filter2d",
    "fused_leaky_relu",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]
