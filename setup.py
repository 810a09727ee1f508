"""Packaging for video-reloc: Video Re-localization (Feng et al., ECCV 2018) in TF2 / Keras 3."""

import pathlib

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow>=2.21,<2.22",
    "keras>=3.12,<4",
    "tensorflow-datasets>=4.9.10,<4.10",
    # TFDS 4.9.10 imports importlib_resources without declaring it on Python 3.11.
    "importlib_resources",
    "numpy>=1.26",
    "h5py>=3.10,<3.15",
    "absl-py>=2.1",
    "tensorboard>=2.21,<2.22",
    "tqdm",
    # video_reloc.serving (video-reloc-serve): TensorFlow Serving's own protos and gRPC stubs
    # (the release that matches TensorFlow 2.21 and its protobuf 6), the gRPC server, the
    # Prometheus metrics, the REST API's routing and its production WSGI server.
    "tensorflow-serving-api>=2.21,<2.22",
    "grpcio>=1.60",
    "prometheus-client>=0.20",
    "werkzeug>=3",
    "waitress>=3",
    # video-reloc-features and relocalize on video files: decoding with FFmpeg's bindings.
    "av>=12",
    # Figures: TensorBoard images, evaluate --plots and relocalize --plot.
    "matplotlib>=3.7",
]

EXTRAS_REQUIRE = {
    # The `tfds build` command needs apache_beam and mlcroissant to start; tfds.testing needs dill.
    "tfds-cli": ["apache_beam", "mlcroissant"],
    "serve": [],  # kept for `pip install video-reloc[serve]`; its packages are requirements
    "test": [
        "pytest>=8",
        "ruff>=0.6",
        "dill",
        "apache_beam",
        "mlcroissant",
    ],
}

CONSOLE_SCRIPTS = [
    "video-reloc-train=video_reloc_bin.train:run",
    "video-reloc-evaluate=video_reloc_bin.evaluate:run",
    "video-reloc-export=video_reloc_bin.export:run",
    "video-reloc-serve=video_reloc_bin.serve:run",
    "video-reloc-relocalize=video_reloc_bin.relocalize:run",
    "video-reloc-benchmark=video_reloc_bin.benchmark:run",
    "video-reloc-features=video_reloc_bin.features:run",
]

setup(
    name="video-reloc",
    version="0.1.0",
    description="Video Re-localization (Feng et al., ECCV 2018) in TensorFlow 2 / Keras 3",
    long_description=(pathlib.Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(
        include=[
            "video_reloc",
            "video_reloc.*",
            "tfds_activitynet_reloc",
            "tfds_activitynet_reloc.*",
        ]
    )
    + ["video_reloc_bin"],
    package_dir={"video_reloc_bin": "bin"},
    include_package_data=True,
    package_data={
        "tfds_activitynet_reloc.activitynet_reloc": [
            "checksums.tsv",
            "CITATIONS.bib",
            "README.md",
            "TAGS.txt",
            "dummy_data/**/*",
        ],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    license="Apache-2.0",
)
