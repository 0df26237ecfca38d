"""RegionVLM: interactive regional understanding with BLIP-2 and text-coordinate region prompts."""

from regionvlm.common.registry import registry
from regionvlm.region import Region, format_points

__version__ = "0.1.0"

__all__ = ["Config", "Region", "format_points", "load_model", "load_model_and_preprocess", "registry"]


def __getattr__(name):
    # Lazy: importing the package stays fast; torch/transformers load on first use.
    if name in ("load_model", "load_model_and_preprocess", "load_preprocess"):
        import regionvlm.models as models

        return getattr(models, name)
    if name == "Config":
        from regionvlm.common.config import Config

        return Config
    raise AttributeError(f"module 'regionvlm' has no attribute '{name}'")
