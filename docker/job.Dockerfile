# The streaming job's image: Python 3.11 with a Java 17 runtime and Spark 4.0.2 from the pinned pyspark wheel
# (bin/spark-submit, the jars), plus the Python packages the job imports, all from requirements.lock.
# Not the official spark:4.0.2-python3 image: it is Ubuntu jammy with Python 3.10, below the pins' range
# (pyproject requires-python >=3.11,<3.12; arro3-core, numpy 2.4 need 3.11), so the job's requirements do not
# install there. tests/unit/test_compose.py checks this base against pyproject.toml.
# The project itself is mounted at /opt/market-signals (docker-compose.yml); JVM packages (Kafka connector, Delta,
# hadoop-aws) are fetched by spark-submit --packages at the first start and cached in the ivy-cache volume.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*
COPY requirements-job.txt /tmp/requirements-job.txt
RUN python -m pip install --no-cache-dir -r /tmp/requirements-job.txt \
 && useradd --create-home --uid 185 spark \
 && mkdir -p /opt/ivy && chown -R spark:spark /opt/ivy
USER spark
WORKDIR /opt/market-signals
