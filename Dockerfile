# The vitalrisk image: one console script, `vitalrisk`, for every pipeline process
# (docker-compose.yml runs it as migrate, worker, simulate and pager).
# Every dependency ships as a manylinux wheel, so no compiler is installed.

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/vitalrisk
WORKDIR /src
# .dockerignore lets in only what `pip install .` needs.
COPY . .
RUN /opt/vitalrisk/bin/pip install .

FROM python:3.11.14-slim-bookworm
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/vitalrisk \
        --shell /usr/sbin/nologin vitalrisk
COPY --from=build /opt/vitalrisk /opt/vitalrisk
ENV PATH=/opt/vitalrisk/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Faust keeps its local table state under the working directory (VITALS_DATA_DIR, .local/faust).
WORKDIR /var/lib/vitalrisk
USER 10001:10001
ENTRYPOINT ["vitalrisk"]
CMD ["--help"]
