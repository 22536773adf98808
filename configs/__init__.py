"""parsenet's Hydra configs, installed as the package ``parsenet.configs`` (YAML files only)."""
