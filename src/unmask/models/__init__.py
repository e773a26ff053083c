"""Native PyTorch modules for the LLaDA and Dream families and their checkpoint loader."""
