# driftwatch production image: Apache Airflow 3.3.2 + the locked requirements + the ml package, DAGs and
# plugins baked in. One image for every Airflow service (api-server, scheduler, dag-processor, triggerer,
# celery workers, init) and for the MLflow tracking server (docker-compose.yaml).
#
#   docker-compose build            (or: docker build -t driftwatch:latest .)
#
# Nothing secret goes into the image: every password and key comes from the environment at run time.
FROM apache/airflow:3.3.2-python3.11

# The lock was resolved for Python 3.11 with apache-airflow==3.3.2 (requirements.in), the versions the
# integration tests ran. Naming apache-airflow again stops pip from moving the image's Airflow.
COPY --chown=airflow:0 requirements.txt /opt/driftwatch/requirements.txt
RUN pip install --no-cache-dir --compile "apache-airflow==3.3.2" -r /opt/driftwatch/requirements.txt

# The ml package (not editable: the image is immutable), then its bytecode: task processes import
# evidently, great_expectations and mlflow, and compiled modules load about twice as fast. devstack comes
# along for devstack.launch only: the airflow-worker's command (preloaded ML libraries, loopback log server).
COPY --chown=airflow:0 pyproject.toml /opt/driftwatch/pyproject.toml
COPY --chown=airflow:0 ml /opt/driftwatch/ml
COPY --chown=airflow:0 devstack /opt/driftwatch/devstack
RUN pip install --no-cache-dir --no-deps /opt/driftwatch \
    && python -m compileall -q "$(python -c 'import ml, os; print(os.path.dirname(ml.__file__))')"

COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins

ENV DRIFTWATCH_HOME=/opt/driftwatch/var \
    DRIFTWATCH_LAKE=/data/lake \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true
