# The order system's scripts; the broker comes from docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt pyproject.toml ./
COPY kafka_project ./kafka_project
RUN pip install -r requirements.txt \
    && useradd --system --no-create-home --uid 10001 app

USER 10001
CMD ["python", "kafka_project/consumer/consumer.py"]
