-- Runs once, when the postgres service starts on an empty volume (/docker-entrypoint-initdb.d).
-- One role and one database per consumer, each role owning only its own database. The passwords come
-- from the postgres container's environment (\getenv, psql 15+): none is written here or in the compose file.
\set ON_ERROR_STOP on

\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv driftwatch_password DRIFTWATCH_DB_PASSWORD

-- Airflow metadata database, also the Celery result backend
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;

-- MLflow tracking + model registry (the backend store of the mlflow service)
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;

-- driftwatch history: dw_days, dw_alias_events, dw_models, dw_locks (DRIFTWATCH_DB_URL of the tasks)
CREATE ROLE driftwatch LOGIN PASSWORD :'driftwatch_password';
CREATE DATABASE driftwatch OWNER driftwatch;

-- nobody but the owners connects to the application databases
REVOKE CONNECT ON DATABASE airflow, mlflow, driftwatch FROM PUBLIC;
