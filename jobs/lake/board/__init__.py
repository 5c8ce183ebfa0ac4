"""The live signal board (`python -m jobs.board`): a Flask page over the Delta tables, following their commits.

- follow.py: a Delta table followed version by version, reading only the files new commits added;
- state.py: the bounded picture the page shows (latest signal per symbol, crossovers, health, quarantine);
- app.py: the Flask app, its server and the command line; static/: the page, its script and styles.
"""
