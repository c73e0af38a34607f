"""One module per Airflow task, named exactly like the task id (`detect_drift` -> ml/tasks/detect_drift.py).

Each module's docstring is the task's documentation in the Airflow UI; `run(day, ...)` does the work: its
arguments are the outputs of the steps it reads (see ml/flow.py, where the flow is declared once) and it
returns a small typed dict (paths, versions, a few numbers) that goes through XCom. The history row is the
record for people, the UI and the CLI, not the channel between tasks.
"""
