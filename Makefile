# The two entry points named in README.md. Each sets up .venv (idempotent) and then runs.
.PHONY: demo test bench notebooks shapes-model book

demo:
	bash scripts/setup.sh
	.venv/bin/mrcnn-edu demo

test:
	bash scripts/setup.sh test
	.venv/bin/python -m ruff check mrcnn_edu tests benchmarks book
	.venv/bin/python -m pytest -q

bench:
	bash scripts/setup.sh test
	.venv/bin/python benchmarks/ops.py
	.venv/bin/python benchmarks/model.py

# Every notebook executed and rendered to docs/notebooks/*.html (about a minute or two in all on 2 cores).
notebooks:
	bash scripts/setup.sh test
	.venv/bin/jupyter nbconvert --to html --execute --ExecutePreprocessor.timeout=1800 \
		--output-dir docs/notebooks notebooks/*.ipynb

# The course book, a static site built offline into book/_build/html (open its index.html): every stage notebook
# executed in full, the exercises, the trace explorer, the API reference (book/build.py says how).
book:
	bash scripts/setup.sh book
	.venv/bin/python book/build.py

# Retrain the shapes model shipped in the package (mrcnn_edu/weights/shapes.pt) and print its held-out AP:
# the shapes preset for demo.SHIPPED_STEPS steps on one CPU thread (deterministic on one machine).
shapes-model:
	bash scripts/setup.sh
	.venv/bin/mrcnn-edu shapes-model
