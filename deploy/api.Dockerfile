# The slim image: the HTTP API (`darkroom api`) and the webhook worker
# (`darkroom webhooks`). darkroom[api] only: no torch, diffusers or transformers
# (tests/deploy checks that neither imports them). About 260 MB; see
# docs/deploy.md ("Images"). Build from the repository root:
#   docker build -f deploy/api.Dockerfile -t darkroom-api .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md model_config.yaml ./
COPY requirements/lock.txt ./requirements/
# worker/ comes along for the webhook worker (worker/webhook_app.py); its GPU
# modules are never imported here.
COPY api ./api
COPY shared ./shared
COPY worker ./worker
COPY darkroom ./darkroom
# Versions from the lock, the same ones the tests ran with.
RUN pip install -c requirements/lock.txt '.[api]'

RUN useradd --create-home --uid 10001 darkroom
USER darkroom

EXPOSE 8000
CMD ["darkroom", "api", "--host", "0.0.0.0", "--port", "8000"]
