"""Entry points (train, edit, figures, eval) and their YAML configs."""
