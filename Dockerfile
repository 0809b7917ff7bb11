# PersonaForge Studio: one image for the Ray head, the GPU workers, the model-download Job and
# a single-box `docker run`. Weights are not in it: they live on the /workspace volume, which
# download_models.py fills.
#
# Base: Ray's own image for the Ray version requirements.txt pins (ray[serve]==2.60.0), Python
# 3.11 (CI's and the developers' Python) and CUDA 12.8; Ray's "-gpu" alias still means CUDA
# 12.1, so the CUDA version is spelled out to match the torch index below. Ubuntu inside (apt);
# it runs as the non-root user `ray` (uid 1000, gid 100) with Python in ~/anaconda3.
FROM rayproject/ray:2.60.0-py311-cu128

# torch from the CUDA 12.8 index, the same CUDA as the base image; the version comes from
# requirements.txt through scripts/install.sh. PF_INSTALL_DEV=1 adds requirements-dev.txt
# (pytest and the test tools) for running the suite, `-m requires_cuda` included, in the image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG PF_INSTALL_DEV=0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/personaforge

# System packages: the same script (and list) as `make test` and CI. Root only for apt; the
# lists are dropped in the same layer so they never ship. Users by number: Kubernetes'
# runAsNonRoot can only verify a numeric one.
USER 0
COPY scripts/install.sh scripts/install.sh
RUN bash scripts/install.sh system \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /workspace/models /workspace/personas /workspace/cache \
    && chown -R 1000:100 /workspace

# Python packages as `ray`, into the base image's Python (owned by `ray`). The requirement files
# come before the code so a code change does not reinstall torch.
USER 1000:100
COPY requirements.txt requirements-dev.txt ./
RUN dev=""; if [ "${PF_INSTALL_DEV}" = "1" ]; then dev="--dev"; fi; \
    bash scripts/install.sh python --python python --torch-index-url "${TORCH_INDEX_URL}" ${dev:+"$dev"}

# The code, owned by root: the service can read it but not rewrite it. Runtime data (models,
# personas, cache) goes to /workspace, a volume in production and a writable folder otherwise.
COPY . .
ENV PYTHONPATH=/opt/personaforge \
    PF_PRODUCTION=1 \
    PF_MODELS_DIR=/workspace/models \
    PF_PERSONAS_DIR=/workspace/personas \
    PF_CACHE_DIR=/workspace/cache

# 8000: Serve's HTTP proxy (the API); 8265: the Ray dashboard and Serve's REST API.
EXPOSE 8000 8265

# Healthy when this container's Serve proxy answers /-/healthz. Kubernetes ignores Docker health
# checks (KubeRay sets its own probes); `docker run` and the cluster launcher's hosts use it.
# The start period covers Ray's start and the GPU replicas loading their weights.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD ["python", "/opt/personaforge/scripts/healthcheck.py"]

# Single box (one GPU): a local Ray with every deployment. The cluster launcher and KubeRay
# replace this command with their own `ray start`.
CMD ["serve", "run", "serve_config.yaml"]
