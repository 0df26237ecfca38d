"""Import every module that registers something, so the registry is complete."""
import regionvlm.models  # noqa: F401
import regionvlm.processors  # noqa: F401
