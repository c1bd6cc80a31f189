# adjoint-sampling: one image for the API, the training worker and the energy workers.
#
#   CPU (default):  docker build -t adjoint-sampling .
#   CUDA:           docker build -t adjoint-sampling:cuda --build-arg TORCH_VARIANT=cu128 .
#                   (any CUDA variant the PyTorch index has for torch 2.13.0; the wheels bundle CUDA,
#                   the host needs the NVIDIA driver and container toolkit)
#
# Dependencies are pinned: torch first from the PyTorch index, then the project under constraints.txt
# so nothing can replace that torch build.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ADJOINT_SAMPLING_REDIS_DIR=/data/redis

# libgomp: OpenMP for torch/xtb; libxrender/libxext: RDKit's drawing code
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libxrender1 libxext6 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"

COPY pyproject.toml constraints.txt README.md ./
# the floors, bottom to top (tests/test_layering.py checks this list against the packages)
COPY sampler ./sampler
COPY energy ./energy
COPY molecules ./molecules
COPY buffer ./buffer
COPY training ./training
COPY inference ./inference
COPY service ./service
COPY benchmarks ./benchmarks
COPY cli ./cli
COPY checkpoints ./checkpoints
# editable: the CLI finds the shipped checkpoints next to the code
RUN pip install -c constraints.txt -e . \
    && python -c "import torch; assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__"

RUN useradd --create-home --uid 1000 app && mkdir -p /checkpoints /data && chown app /checkpoints /data
USER app

ENTRYPOINT ["adjoint-sampling"]
CMD ["--help"]
