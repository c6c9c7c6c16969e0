"""genhancer-llava: GenHancer post-training for CLIP-family encoders, and their use in LLaVA.

The library (this package) builds models, targets, data and exports; it never imports
accelerate or DeepSpeed. The training application lives in `genhancer_llava.train`.
"""

from .config import Config, available_presets, load_config
from .errors import ConfigError, GenhancerError

# The one place the version is written: pyproject.toml reads it from here (setuptools dynamic).
__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "GenhancerError",
    "available_presets",
    "load_config",
    "__version__",
]
