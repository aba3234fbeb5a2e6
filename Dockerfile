# The steel-worker image: `steel-worker run` (the worker), `db upgrade` (migrations), `simulate`.
#
#   docker build -t steel-worker:0.1.0 .                       # GPU build (TensorFlow with CUDA)
#   docker build --build-arg TENSORFLOW=cpu -t steel-worker:0.1.0-cpu .
#
# The code reads its message contracts (schemas/) and migrations (migrations/, alembic.ini) from
# the project folder next to the `worker` package, so the whole project is copied to /app and /app
# is first on PYTHONPATH: `import worker` resolves to /app/worker whatever the working directory,
# and `pip install .` supplies the dependencies and the `steel-worker` command.
FROM python:3.11-slim

# gpu: replace tensorflow-cpu by the same version of tensorflow[and-cuda] (CUDA and cuDNN come as
# wheels; the host needs the NVIDIA driver and the NVIDIA Container Toolkit). cpu: keep it.
ARG TENSORFLOW=gpu

# MALLOC_ARENA_MAX=2: glibc's per-thread arenas (decode threads, the model thread, Kafka's IO
# thread) fragment and let the worker's resident memory creep; two arenas keep it flat
# (docs/reliability.md, measured by the soak).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    KERAS_HOME=/tmp/keras

WORKDIR /app
COPY . /app

RUN set -eux; \
    pip install .; \
    if [ "$TENSORFLOW" = "gpu" ] && pip show tensorflow-cpu > /dev/null 2>&1; then \
        version="$(pip show tensorflow-cpu | sed -n 's/^Version: //p')"; \
        pip uninstall -y tensorflow-cpu; \
        pip install "tensorflow[and-cuda]==${version}"; \
    fi; \
    test -f /app/schemas/frame-meta.v1.json; \
    test -f /app/migrations/env.py; \
    test -f /app/alembic.ini; \
    python -c "import worker.streaming.contracts as c, worker.storage.migrate as m; \
assert c.SCHEMAS_DIR == __import__('pathlib').Path('/app/schemas'), c.SCHEMAS_DIR; \
assert m.MIGRATIONS_DIR == __import__('pathlib').Path('/app/migrations'), m.MIGRATIONS_DIR"; \
    useradd --system --uid 10001 --home-dir /app --no-create-home steel

USER steel
EXPOSE 9108
ENTRYPOINT ["steel-worker"]
CMD ["run"]
