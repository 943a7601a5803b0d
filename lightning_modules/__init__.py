"""LightningModules (audio->CLIP training, manipulation, projection) and their networks."""
