"""Import every module that registers something, so the registry is complete."""
import regionvlm.common.optims  # noqa: F401
import regionvlm.models  # noqa: F401
import regionvlm.processors  # noqa: F401
import regionvlm.runners.runner_base  # noqa: F401
import regionvlm.tasks.captioning  # noqa: F401
import regionvlm.datasets.builders.vcr_builder  # noqa: F401
import regionvlm.tasks.vcr  # noqa: F401
import regionvlm.datasets.builders.vqa_builder  # noqa: F401
import regionvlm.tasks.vqa  # noqa: F401
import regionvlm.datasets.builders.caption_builders  # noqa: F401
import regionvlm.datasets.builders.ris_builder  # noqa: F401
import regionvlm.tasks.ris  # noqa: F401
