# The steel-worker image: `steel-worker run` (the worker), `db upgrade` (migrations), `simulate`.
#
#   docker build -t steel-worker:0.1.0 .                       # GPU build (TensorFlow with CUDA)
#   docker build --build-arg TENSORFLOW=cpu -t steel-worker:0.1.0-cpu .
#
# The image installs the project as a wheel: the package carries its message contracts (schemas/),
# migrations and default alert rules inside it (worker.core.resources), so nothing depends on the
# working directory or on PYTHONPATH. The source is built in a first stage and not kept.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY . /src
RUN pip wheel --no-cache-dir --no-deps -w /wheels /src

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
    KERAS_HOME=/tmp/keras

WORKDIR /app
COPY --from=wheel /wheels /wheels

RUN set -eux; \
    pip install /wheels/steel_worker-*.whl; \
    rm -rf /wheels; \
    if [ "$TENSORFLOW" = "gpu" ] && pip show tensorflow-cpu > /dev/null 2>&1; then \
        version="$(pip show tensorflow-cpu | sed -n 's/^Version: //p')"; \
        pip uninstall -y tensorflow-cpu; \
        pip install "tensorflow[and-cuda]==${version}"; \
    fi; \
    cd /; python -c "import sysconfig, worker.core.contracts as c, worker.storage.migrate as m; \
site = sysconfig.get_paths()['purelib']; \
assert str(c.SCHEMAS_DIR).startswith(site) and (c.SCHEMAS_DIR / 'frame-meta.v1.json').is_file(), c.SCHEMAS_DIR; \
assert str(m.MIGRATIONS_DIR).startswith(site) and (m.MIGRATIONS_DIR / 'env.py').is_file(), m.MIGRATIONS_DIR"; \
    useradd --system --uid 10001 --home-dir /app --no-create-home steel

USER steel
EXPOSE 9108
ENTRYPOINT ["steel-worker"]
CMD ["run"]
