# syntax=docker/dockerfile:1
# The Aurion Conversations API in a container: `docker compose up --build` (docker-compose.yml)
# runs it with PostgreSQL and the migrations. Standalone:
#   docker build -t aurion .
#   docker run --rm -e DATABASE_URL=postgresql://u:p@host:5432/db -e AURION_JWT_SECRET=... \
#     -p 8000:8000 aurion            # serves; `aurion db upgrade` must have run once first

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment holding the project and its dependencies ----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
# Dependencies first, from pyproject.toml alone, so a code change reuses this layer.
COPY pyproject.toml README.md ./
RUN mkdir -p src/aurion && touch src/aurion/__init__.py \
    && pip install . \
    && pip uninstall -y aurion
COPY src ./src
RUN pip install --no-deps . && rm -rf /build

# ---- runtime: the virtual environment, the migrations and an unprivileged user -------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AURION_ENV=production
RUN groupadd --system --gid 10001 aurion \
    && useradd --system --uid 10001 --gid aurion --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin aurion
COPY --from=build /opt/venv /opt/venv
# `aurion db upgrade` and /readyz find alembic.ini and migrations/ in the working directory.
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
USER 10001:10001
EXPOSE 8000
# Liveness only (/healthz): a database outage is /readyz's business, and restarting the
# container would not cure it. Load balancers should probe /readyz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
# Exec form: aurion (uvicorn) is PID 1 and gets SIGTERM, finishing in-flight requests first.
ENTRYPOINT ["aurion"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
