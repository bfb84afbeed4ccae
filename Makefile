# `make run`: set up .venv and run the pipeline; `make test`: the fast tests; `make test-slow`: the end-to-end ones.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run quick test test-slow
run: $(VENV)/.installed
	dvc repro

# the whole pipeline on a quarter of the data, 4 epochs, as a temporary experiment: the workspace stays as it is
QUICK = -S "data.splits.train='train[:5000]'" -S "data.splits.validation='train[20000:20200]'" \
        -S "data.splits.test='validation[:300]'" -S train.epochs=4 -S train.eval_questions=50
quick: $(VENV)/.installed
	dvc exp run --temp $(QUICK)
	dvc exp show --only-changed --drop 'precision|recall|rouge1|rouge2|rougeLsum|questions|missing_predictions|empty_predictions|long_contexts.*|data/.*|models|stages/.*'

test: $(VENV)/.installed
	python -m pytest -q -m "not slow"

# end to end through dvc and subprocesses: pipeline, kill and resume, queue, several processes, benchmark
test-slow: $(VENV)/.installed
	python -m pytest -q -m slow

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

# `dvc plots show` must draw without network: .dvc/plots/offline.html (committed) inlines the Vega,
# Vega-Lite and vega-embed builds that dvc-render links from a CDN. This target rebuilds it with npm.
VEGA_PACKAGES = vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
.PHONY: plots-template
plots-template:
	rm -rf .vega && mkdir .vega && cd .vega && npm pack -q $(VEGA_PACKAGES) >/dev/null && for f in *.tgz; do tar xzf $$f && mv package $${f%-*}; done
	{ echo '<!DOCTYPE html><html><head><meta charset="utf-8"><title>DVC plots</title>{refresh_tag}'; \
	  echo '<!-- $(VEGA_PACKAGES), BSD-3-Clause (https://github.com/vega), inlined by `make plots-template` -->'; \
	  for js in vega vega-lite vega-embed; do printf '<script>'; cat .vega/$$js/build/$$js.min.js; echo '</script>'; done; \
	  echo '</head><body>{plot_divs}</body></html>'; } > .dvc/plots/offline.html
	rm -rf .vega
