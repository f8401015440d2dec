# The two entry points named in README.md. Each sets up .venv (idempotent) and then runs.
.PHONY: demo test lint bench

demo:
	bash scripts/setup.sh
	.venv/bin/mrcnn-edu demo

test:
	bash scripts/setup.sh test
	.venv/bin/python -m ruff check mrcnn_edu tests benchmarks
	.venv/bin/python -m pytest -q

bench:
	bash scripts/setup.sh test
	.venv/bin/python benchmarks/ops.py
