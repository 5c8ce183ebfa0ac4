# The streaming job's image: the official Apache Spark 4.0 image (Scala 2.13, Java 17, Python 3) plus the
# Python packages the job imports. The project itself is mounted at /opt/market-signals (docker-compose.yml);
# JVM packages (Kafka connector, Delta, hadoop-aws) are fetched by spark-submit --packages at the first start
# and cached in the ivy-cache volume.
ARG SPARK_IMAGE=spark:4.0.2-python3
FROM ${SPARK_IMAGE}

USER root
COPY requirements-job.txt /tmp/requirements-job.txt
RUN python3 -m pip install --no-cache-dir -r /tmp/requirements-job.txt \
 && python3 -m pip install --no-cache-dir --no-deps delta-spark==4.0.0 \
 && mkdir -p /opt/ivy && chown -R spark:spark /opt/ivy
USER spark
WORKDIR /opt/market-signals
