# vmemlab: the API (`vmemlab serve`, gunicorn) and the Celery worker (`vmemlab worker`) from one
# image; docker-compose.yml runs both against PostgreSQL and Redis.
#   docker build -t vmemlab .
#   docker run --rm -p 8000:8000 vmemlab vmemlab up --host 0.0.0.0   # embedded default, one container

# --- build the wheel (sources stay in this stage) ---------------------------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY plugins ./plugins
COPY migrations ./migrations
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- the runtime -------------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VMEMLAB_DATA_DIR=/var/lib/vmemlab \
    VMEMLAB_NUMBA_CACHE_DIR=/home/vmemlab/.cache/vmemlab/numba
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin vmemlab \
    && mkdir -p /var/lib/vmemlab/traces /home/vmemlab/.cache/vmemlab/numba \
    && chown -R vmemlab:vmemlab /var/lib/vmemlab /home/vmemlab/.cache
USER vmemlab
WORKDIR /home/vmemlab
# compile the engine once into numba's cache in the image, so that a new worker's first run does
# not spend seconds compiling
RUN python -c "from service.engine import simulate; from service.scenario import load_scenario; \
from service.policies import load_policy; \
s, _ = load_scenario({'name': 'warm', 'duration_s': 1, 'host': {'memory_mb': 1024}, 'vms': [{'name': 'a', \
'memory_mb': 256, 'os_mb': 32, 'workload': {'phases': [{'kind': 'zipf', 'footprint_mb': 128, 'duration_s': 1}]}}]}); \
[simulate(s, load_policy(p).create({})) for p in ('static', 'overcommit', 'esx', 'dynamic-memory', 'smart-paging', 'kvm')]"
# uploaded traces live in the data folder: the API writes them, the workers read them
VOLUME ["/var/lib/vmemlab"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=4)"
# migrate the database, then serve the API (SIGTERM: graceful stop)
CMD ["vmemlab", "serve", "--host", "0.0.0.0", "--port", "8000"]
