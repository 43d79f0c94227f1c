# syntax=docker/dockerfile:1
# The Shepherd operator image: `docker build -t shepherd .`
# The chart runs it as `shepherd run --all-namespaces --leader-elect --liveness=http://0.0.0.0:8080/healthz ...`.

ARG PYTHON_IMAGE=python:3.11-slim

# Build the wheel of release-shepherd and of every dependency, so the runtime stage needs no compiler,
# no network access to a package index and no build tools.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="shepherd" \
      org.opencontainers.image.description="Kubernetes release operator: gates, canary, promotion, bake and rollback" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels release-shepherd
# A numeric non-root uid (distroless calls it "nonroot") that owns nothing in the image, so the operator
# cannot modify its own code even where the root filesystem is writable.
USER 65532:65532
# The liveness and readiness endpoints (--liveness, --readiness).
EXPOSE 8080
ENTRYPOINT ["shepherd"]
# One operator, declared alone; the chart runs two or more replicas with --leader-elect instead. A mode
# is required: `shepherd run` refuses to start without --standalone or --leader-elect.
CMD ["run", "--all-namespaces", "--standalone"]
