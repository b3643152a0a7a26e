# The sscard authentication service. Build: docker build -t sscard .
# Run:   docker run -p 8000:8000 -e SSCARD_DATABASE_URL=postgresql://... -e SSCARD_REDIS_URL=redis://... \
#          -e SSCARD_ISSUER=https://id.example.gov.cn -e SSCARD_KEK=... sscard
# Apply migrations once per release: docker run --rm ... sscard authsvc db upgrade
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc swig libpcsclite-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authsvc ./authsvc
COPY card ./card
COPY keys ./keys
RUN python -m venv /opt/sscard \
 && /opt/sscard/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/sscard/bin/pip install --no-cache-dir '.[server]'

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcsclite1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/sscard --create-home sscard
COPY --from=build /opt/sscard /opt/sscard
ENV PATH=/opt/sscard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SSCARD_HOME=/var/lib/sscard
USER sscard
WORKDIR /var/lib/sscard
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["authsvc", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--proxy-headers"]
