"""tfod: fine-tune TensorFlow Object Detection API models on TF 2.20 or 2.21.

Install with ``make setup [STACK=tf2.21]`` (pins the stack, checks the OD API sdist's sha256);
``pip install -e .`` alone installs tfod and its console script only; ``pip install '.[lite]'``
adds what a TFLite prediction needs, without TensorFlow.
"""

from setuptools import find_packages, setup

setup(
    name="tfod",
    version="0.1.0",
    description="Fine-tune TF Object Detection API models: data, config, train, eval, export.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["tfod", "tfod.*"]),
    package_data={"tfod": ["py.typed"]},
    entry_points={"console_scripts": ["tfod=tfod.cli:main"]},
    extras_require={
        # `tfod tensorboard --ngrok`: pip install 'tfod[ngrok]' (imported only when used)
        "ngrok": ["pyngrok>=9,<10"],
        # `tfod predict --model model.tflite` on a device: the LiteRT runtime, no
        # TensorFlow (pip install 'tfod[lite]'; `make lite`; README "On a device")
        "lite": ["ai-edge-litert>=2", "numpy", "pillow", "tqdm"],
    },
)
