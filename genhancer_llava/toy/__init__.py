"""The toy world: generated scenes with recorded attributes, a small CLIP pretrained on them,
benchmarks and probes drawn from the same world, and the study that runs `enhance` on it."""
