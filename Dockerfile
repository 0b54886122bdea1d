# The exchange (hie serve). The same image runs the consent service and the
# adapters with another command.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY hie ./hie
COPY consent ./consent
COPY imaging ./imaging
COPY adapters ./adapters
RUN pip install . && useradd --system --home /app hie && mkdir -p /app/var && chown hie /app/var
USER hie
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz').status == 200 else 1)"
CMD ["hie", "serve", "--host", "0.0.0.0", "--port", "8080"]
