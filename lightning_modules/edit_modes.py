"""The three ways to edit a W+ code towards a target in CLIP space, behind one call (the edit command, the
manipulation job, figures, animate and the page all use it):

    optimise  Eq. 2 from the source (`optimise`: Adam on W+, steps x (synthesis + CLIP + backward));
    mapper    one forward pass of a trained SoundMapper: w_s + dw(w_s, e), no gradient, no optimiser;
    refine    the mapper's output as the start of `refine_steps` Eq. 2 steps (distance still to the source).

`strength` scales the edit's displacement from the source in every mode: w = w_s + strength * (w_edit - w_s)
(in mapper mode that is exactly `SoundMapper.edit(w_s, e, strength)`); 0 returns the source, negative values edit
away from the sound.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.edit_outputs import resize_uint8, to_uint8
from lightning_modules.eq2_step import eq2_loss
from lightning_modules.manipulation import EditResult, StepCallback, optimise
from lightning_modules.networks.mapper import SoundMapper

EDIT_MODES = ("optimise", "mapper", "refine")


def check_mode(mode: str, mapper: object | None) -> None:
    """Raise a one-line ValueError for an unknown mode, or a mapper mode without a mapper."""
    if mode not in EDIT_MODES:
        raise ValueError(f"mode must be one of {', '.join(EDIT_MODES)}; got {mode!r}")
    if mode != "optimise" and mapper is None:
        raise ValueError(f"mode {mode!r} needs a trained mapper (--mapper / model.mapper)")


@torch.no_grad()
def mapper_edit(G: torch.nn.Module, clip_model: CLIPWrapper, mapper: SoundMapper, w_source: torch.Tensor,
                target: torch.Tensor, lambda_sim: torch.Tensor | float, strength: float = 1.0,
                gif_every: int = 0, frame_size: int = 128) -> EditResult:
    """One forward pass: w = mapper.edit(w_s, e, strength), its image and Eq. 2's terms (scored, not optimised)."""
    w_source = w_source.detach().float()
    target = F.normalize(target.detach().float().to(w_source.device), dim=-1)
    lam = torch.as_tensor(lambda_sim, dtype=torch.float32, device=w_source.device).expand(w_source.shape[0])
    w = mapper.edit(w_source, target.to(w_source.dtype), strength)
    both = G.synthesis(torch.cat([w_source, w]))
    source_images, images = both.split(w_source.shape[0])
    emb = clip_model.encode_image(both)
    cos_before = (emb[: len(w)] * target).sum(-1)
    loss, cos, dist2 = eq2_loss(emb[len(w):], target, w, w_source, lam)
    frames = []
    if gif_every:
        frames = [resize_uint8(to_uint8(x), min(frame_size, x.shape[-1])) for x in (source_images, images)]
    return EditResult(w=w.cpu(), images=images, source_images=source_images, losses=torch.zeros(0, w.shape[0]),
                      cos_before=cos_before.cpu(), cos_after=cos.cpu(), loss_after=loss.cpu(),
                      w_dist=dist2.sqrt().cpu(), frames=frames)


def run_edit(G: torch.nn.Module, clip_model: CLIPWrapper, w_source: torch.Tensor, target: torch.Tensor,
             lambda_sim: torch.Tensor | float, *, mode: str = "optimise", mapper: SoundMapper | None = None,
             strength: float = 1.0, steps: int = 300, lr: float = 0.1, refine_steps: int = 20,
             callback: StepCallback | None = None, gif_every: int = 0, frame_size: int = 128,
             progress: bool = False, **optimise_options) -> EditResult:
    """Edit a batch of pairs in `mode` (see the module docstring); returns `optimise`'s EditResult.
    `optimise_options` (precision, cuda_graph) go to `optimise` in modes optimise and refine."""
    check_mode(mode, mapper)
    if mode == "mapper":
        return mapper_edit(G, clip_model, mapper, w_source, target, lambda_sim, strength, gif_every, frame_size)
    w_init = None
    if mode == "refine":
        with torch.no_grad():
            w_src = w_source.detach().float()
            w_init = mapper.edit(w_src, F.normalize(target.detach().float().to(w_src.device), dim=-1))
        steps = refine_steps
    result = optimise(G, clip_model, w_source, target, lambda_sim, steps=steps, lr=lr, w_init=w_init,
                      callback=callback, gif_every=gif_every, frame_size=frame_size, progress=progress,
                      **optimise_options)
    if strength != 1.0:
        result = rescale(G, clip_model, result, w_source, target, lambda_sim, strength)
    return result


@torch.no_grad()
def rescale(G: torch.nn.Module, clip_model: CLIPWrapper, result: EditResult, w_source: torch.Tensor,
            target: torch.Tensor, lambda_sim: torch.Tensor | float, strength: float) -> EditResult:
    """The same edit at another strength: w = w_s + strength * (w - w_s), re-synthesised and re-scored."""
    w_source = w_source.detach().float()
    w = (w_source.cpu() + strength * (result.w - w_source.cpu())).to(w_source.device)
    images = G.synthesis(w)
    target = F.normalize(target.detach().float().to(w.device), dim=-1)
    lam = torch.as_tensor(lambda_sim, dtype=torch.float32, device=w.device).expand(w.shape[0])
    loss, cos, dist2 = eq2_loss(clip_model.encode_image(images), target, w, w_source, lam)
    result.w, result.images, result.cos_after = w.cpu(), images, cos.cpu()
    result.loss_after, result.w_dist = loss.cpu(), dist2.sqrt().cpu()
    return result
