"""Vision side of LLaDA-V: image preprocessing, tower, projector, packing."""
