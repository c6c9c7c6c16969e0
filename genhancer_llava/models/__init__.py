"""The model library: encoders and their families, target producers, projector, denoisers, the
enhancer that ties them together, and export/conversion helpers. No training loop lives here."""
