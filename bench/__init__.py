"""The benchmark: bench/run.py with its load generator (loadgen.py) and floor app (floor_app.py)."""
