"""One Adam step of paper Eq. 2 on a batch of W+ codes, run eagerly or replayed from a captured CUDA graph.

A step is: G.synthesis(w) → CLIP image embedding → per-pair Eq. 2 loss → backward → Adam. At 1024 px a step is
hundreds of small kernels, so on a fast GPU the host's kernel launches, not the arithmetic, set the pace. A CUDA
graph records the whole step once and replays it with one launch; only the learning rate changes between steps,
and it lives in a device tensor that Adam (``capturable=True``) reads inside the graph. Both classes run the same
body (`Eq2Step._body`), so the graph computes what the eager step computes.
"""

from __future__ import annotations

import contextlib

import torch

from lightning_modules.clip_wrapper import CLIPWrapper

PRECISIONS = ("fp32", "bf16")


def eq2_loss(image_emb: torch.Tensor, target: torch.Tensor, w: torch.Tensor, w_source: torch.Tensor,
             lambda_sim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair Eq. 2 loss (B,), with the cosine (B,) and squared W+ distance (B,) it is made of.

    ``image_emb`` and ``target`` are L2-normalised (B, D); ``w``/``w_source`` are (B, L, D); ``lambda_sim`` is (B,),
    or (B, L) for one weight per W+ row (adaptive layer masking weighs each row's squared distance on its own).
    """
    cos = (image_emb * target).sum(-1)
    if lambda_sim.ndim == 2:
        row_dist2 = (w - w_source).pow(2).sum(-1)
        return (1.0 - cos) + (lambda_sim * row_dist2).sum(1), cos, row_dist2.sum(1)
    dist2 = (w - w_source).pow(2).flatten(1).sum(1)
    return (1.0 - cos) + lambda_sim * dist2, cos, dist2


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward pass's autocast: off for fp32, bfloat16 for bf16 (the loss itself is always float32).

    Autocast's cache of cast weights is off: each weight is used once per forward pass, so it saves nothing here,
    and under CUDA-graph capture it would keep tensors that capture frees (PyTorch's CUDA-graph notes)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


class Eq2Step:
    """Eager Eq. 2 steps on the codes ``w`` (a leaf, starting at ``w_start``), pulled towards ``w_source``."""

    def __init__(self, G: torch.nn.Module, clip_model: CLIPWrapper, w_start: torch.Tensor, w_source: torch.Tensor,
                 target: torch.Tensor, lambda_sim: torch.Tensor, precision: str = "fp32") -> None:
        self.G, self.clip_model, self.precision = G, clip_model, precision
        self.w_source, self.target, self.lambda_sim = w_source, target, lambda_sim
        self.w = w_start.detach().clone().requires_grad_(True)
        autocast_for(w_source.device, precision)  # validates the name before any work
        self.opt = self._make_optimizer()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([self.w], lr=0.0)

    def _body(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward, backward and Adam update; returns this step's images, per-pair loss and cosine (pre-update)."""
        with autocast_for(self.w.device, self.precision):
            images = self.G.synthesis(self.w)
            image_emb = self.clip_model.encode_image(images)
        loss, cos, _ = eq2_loss(image_emb.float(), self.target, self.w, self.w_source, self.lambda_sim)
        loss.sum().backward()
        self.opt.step()
        return images.detach(), loss.detach(), cos.detach()

    def __call__(self, lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step at learning rate ``lr``."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            return self._body()


class GraphedEq2Step(Eq2Step):
    """The same step captured once in a CUDA graph and replayed; the learning rate is a device tensor.

    Capture needs warm-up steps (cuDNN/cuBLAS choose their algorithms, Adam allocates its state); those would move
    ``w`` and Adam's moments, so both are restored in place afterwards: the first replay starts exactly where an eager
    run starts. The tensors returned by a call are the graph's static outputs, overwritten by the next replay —
    copy what you keep.
    """

    def __init__(self, *args, warmup: int = 3, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.w.device.type != "cuda":
            raise ValueError(f"a CUDA graph needs the codes on a CUDA device, not {self.w.device}")
        w0 = self.w.detach().clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.enable_grad():
            for _ in range(warmup):
                self.opt.zero_grad(set_to_none=True)
                self._body()
        torch.cuda.current_stream().wait_stream(side)
        self._reset(w0)
        self.graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph), torch.enable_grad():
            self.static = self._body()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        self.lr = torch.zeros((), device=self.w.device)
        return torch.optim.Adam([self.w], lr=self.lr, capturable=True)

    @torch.no_grad()
    def _reset(self, w0: torch.Tensor) -> None:
        """Undo the warm-up in place (the graph keeps the tensors' addresses): codes, Adam moments and step count."""
        self.w.copy_(w0)
        for state in self.opt.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()

    def __call__(self, lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.lr.fill_(lr)
        self.graph.replay()
        return self.static
