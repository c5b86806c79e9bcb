# Targets:
#   (default)      the slim serving image: onnx_models/ + serve/ on onnxruntime, nothing else
#   export         retrains the models from data/ and holds only the new onnx_models/ folder:
#                  docker build --target export --output type=local,dest=. .
# The default target is the last stage; BuildKit and buildah skip the stages only `export` needs.

FROM python:3.11-slim AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1


FROM python AS train
# PyPI's torch wheel for Linux x86_64 is the CUDA build (its nvidia-* dependencies are gigabytes);
# the CPU build of the same version, 2.13.0+cpu, is only on PyTorch's index (or a mirror of it).
# The exact local version pins it there; its dependencies, and then the rest, come from PyPI.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY requirements.txt requirements-export.txt ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --extra-index-url "$TORCH_INDEX_URL" torch==2.13.0+cpu \
 && /opt/venv/bin/pip install --no-cache-dir -r requirements-export.txt
COPY data/ data/
COPY export/ export/
RUN /opt/venv/bin/python -m export


FROM scratch AS export
COPY --from=train /src/onnx_models/ /onnx_models/


FROM python AS runtime-venv
# binutils for `strip`. Unpinned: this stage is thrown away, and a pin would tie it to one Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/
# pip and setuptools only install: the runtime image does without them.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
 && /opt/venv/bin/pip uninstall --yes pip setuptools
# About 40 MB nobody runs: numpy's own test suite, onnxruntime's model-conversion tooling (transformers,
# quantization, tools: 9 MB of Python that inference never imports), and the debug symbols uvloop and
# httptools ship. Only those two are stripped: numpy's and onnxruntime's libraries are already stripped
# and patched by auditwheel, and rewriting a patched ELF file can break it.
WORKDIR /opt/venv/lib/python3.11/site-packages
RUN find numpy -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf onnxruntime/transformers onnxruntime/quantization onnxruntime/tools \
 && strip --strip-debug uvloop/*.so httptools/parser/*.so


FROM python AS runtime
COPY --from=runtime-venv /opt/venv /opt/venv
WORKDIR /app
COPY serve/ serve/
# The model store, <name>/<version>/model.onnx with its plot (model.png, ~40 kB, shown on the landing page);
# .dockerignore leaves out the cards, which are for people reading the repository. A new version rolls out by
# mounting a store instead and calling load, or with a new image.
COPY onnx_models/ onnx_models/
# One worker and one onnxruntime thread per CPU: scale by replicas (deploy/README.md), or raise these
# together with the container's CPU limit.
ENV PATH=/opt/venv/bin:$PATH \
    SERVE_HOST=0.0.0.0 \
    SERVE_PORT=8000 \
    SERVE_GRPC_PORT=8001 \
    SERVE_WORKERS=1 \
    SERVE_ORT_THREADS=1 \
    SERVE_MODEL_DIR=/app/onnx_models
# Numeric, so Kubernetes can verify runAsNonRoot; the code stays root-owned, hence read-only to the server.
USER 10001:10001
# HTTP (REST, Open Inference V2) and the Open Inference Protocol over gRPC.
EXPOSE 8000 8001
# Readiness, not liveness: healthy means every model is loaded and warmed. The slim image has no curl.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", \
         "import os, urllib.request as u; u.urlopen(f'http://127.0.0.1:{os.environ[\"SERVE_PORT\"]}/health/ready', timeout=2)"]
# Exec form: python is PID 1 and receives SIGTERM itself, so uvicorn drains before exiting.
CMD ["python", "-m", "serve"]
