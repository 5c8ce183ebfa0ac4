# The simulator and the SQL tools (jobs.query on DuckDB, jobs.catalog, jobs.athena) on plain Python 3.11.
# The project is mounted at /opt/market-signals (docker-compose.yml); only its dependencies live in the image.
FROM python:3.11-slim

COPY requirements-python.txt /tmp/requirements-python.txt
RUN python -m pip install --no-cache-dir -r /tmp/requirements-python.txt
WORKDIR /opt/market-signals
