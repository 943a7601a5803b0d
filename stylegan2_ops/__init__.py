"""StyleGAN2's fused ops (bias_act, upfirdn2d): reference PyTorch, C++ and CUDA kernels.

Every op takes `impl='auto'|'ref'|'cpp'|'cuda'`; 'auto' picks CUDA for CUDA tensors, C++ for CPU tensors and the
pure-PyTorch reference when no build is available. Kernels are JIT-compiled with ninja on first use (never at
import), once per process, under a file lock that DDP ranks share. Environment:

  STYLEGAN2_OPS_IMPL=ref|cpp|cuda   what 'auto' means (ref skips every build)
  STYLEGAN2_OPS_BUILD_DIR           build cache (default ~/.cache/aiartist/torch_extensions)
  STYLEGAN2_OPS_VERBOSE=1           show the compiler / ninja output
  STYLEGAN2_OPS_CUDA_ARCHS="80;90"  CUDA targets (default 80 and 90, plus the visible GPU's)
  STYLEGAN2_OPS_LOCK_TIMEOUT=900    seconds after which a build lock whose holder may be alive is taken over
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
