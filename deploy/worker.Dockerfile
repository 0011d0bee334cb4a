# The CUDA image: GPU workers (`darkroom worker`). darkroom[worker] plus the CUDA
# build of the torch release in requirements/torch.txt. About 5.3 GB; see
# docs/deploy.md ("Images"). Build from the repository root:
#   docker build -f deploy/worker.Dockerfile -t darkroom-worker .
#
# No nvidia/cuda base: PyPI's Linux x86_64 torch wheels carry their CUDA
# user-space libraries as wheels (cuBLAS, cuDNN, NCCL, ...), so a CUDA base image
# would be a second copy. The host provides only the NVIDIA driver (through the
# NVIDIA container toolkit or the device plugin), recent enough for that CUDA.
FROM python:3.11-slim

# Another build of the same torch release, e.g. one for an older driver:
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG TORCH_INDEX_URL=https://pypi.org/simple

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /app
COPY requirements/torch.txt requirements/lock.txt ./requirements/
# torch first, in a layer of its own (most of the image): a code change does
# not download it again. Its own dependencies are pinned by the lock.
RUN pip install --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple \
      -c requirements/lock.txt -r requirements/torch.txt

COPY pyproject.toml README.md model_config.yaml ./
COPY api ./api
COPY shared ./shared
COPY worker ./worker
COPY darkroom ./darkroom
# The torch installed above satisfies darkroom[worker]; the rest comes from the lock.
RUN pip install -c requirements/lock.txt -r requirements/torch.txt '.[worker]'

RUN useradd --create-home --uid 10001 darkroom && mkdir -p /models && chown darkroom /models
USER darkroom

CMD ["darkroom", "worker"]
