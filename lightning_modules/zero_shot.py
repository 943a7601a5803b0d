"""Class-prompt text embeddings: the zero-shot classifier that training targets and evaluation scores against.

A class's embedding is CLIP's text embedding of its prompt, averaged over the prompt templates and
re-normalised (CLIP's prompt ensembling). Underscores in dataset class names become spaces
("crackling_fire" -> "crackling fire"), so ESC-50 and UrbanSound8K names read as words.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lightning_modules.clip_wrapper import CLIPWrapper

DEFAULT_TEMPLATE = "This is a sound of {label}."
BARE_LABEL = "{label}"


def label_to_words(name: str) -> str:
    """Dataset class name -> words for a prompt."""
    return " ".join(name.replace("_", " ").split())


def class_prompts(class_names: Sequence[str], template: str) -> list[str]:
    if "{label}" not in template:
        raise ValueError(f"prompt template {template!r} has no '{{label}}' placeholder")
    return [template.format(label=label_to_words(name)) for name in class_names]


@torch.no_grad()
def class_prompt_embeddings(
    clip: CLIPWrapper, class_names: Sequence[str], templates: Sequence[str] = (DEFAULT_TEMPLATE,),
) -> torch.Tensor:
    """(C, D) float32 L2-normalised prompt embeddings, averaged over `templates` (autocast off)."""
    if not class_names:
        raise ValueError("class_prompt_embeddings: no class names")
    if not templates:
        raise ValueError("class_prompt_embeddings: no prompt templates")
    total = sum(clip.encode_text(class_prompts(class_names, t)) for t in templates)
    return F.normalize(total.float(), dim=-1)
