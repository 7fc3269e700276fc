# veolia2mqtt container: multi-stage, slim, non-root (uid 1000).
# Build:  docker build -t veolia2mqtt .
# Run:    docker run -v ./config:/config:ro -v veolia2mqtt-data:/data veolia2mqtt

FROM python:3.12-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2.post1
COPY pyproject.toml README.md ./
COPY veolia2mqtt ./veolia2mqtt
RUN python -m build --wheel --outdir /dist

FROM python:3.12-slim
LABEL org.opencontainers.image.title="veolia2mqtt" \
      org.opencontainers.image.description="Veolia Eau water meters to MQTT (Home Assistant, Jeedom)"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TZ=Europe/Paris \
    VEOLIA2MQTT_CONFIG=/config/config.yaml \
    VEOLIA2MQTT_STATE_DIR=/data
# tzdata (IANA zones for sync.timezone) comes in as a Python dependency of the wheel.
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && groupadd --gid 1000 veolia2mqtt \
    && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin veolia2mqtt \
    && mkdir -p /config /data \
    && chown 1000:1000 /data
USER 1000:1000
WORKDIR /data
VOLUME ["/config", "/data"]
HEALTHCHECK --interval=60s --timeout=10s --start-period=120s --retries=3 \
    CMD ["veolia2mqtt", "health"]
ENTRYPOINT ["veolia2mqtt"]
CMD ["--config", "/config/config.yaml"]
