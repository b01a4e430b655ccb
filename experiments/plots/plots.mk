# plots.mk — `make plots RUN=run_dir` (or RUN="dir1 dir2" for one line per model):
# renders every applicable figure of experiments/plots/ as PNG + PDF into
# FIRST_RUN/plots (PLOTS_OUT=dir to change). Needs Debian's python3-matplotlib
# and python3-numpy under /usr/bin/python3 (PLOT_PYTHON=... to use another).
PLOT_PYTHON ?= /usr/bin/python3
PLOTS_OUT   ?=

.PHONY: plots
plots:
	@test -n "$(RUN)" || { echo 'usage: make plots RUN=run_dir   (a kvlab trace or correlate output directory)'; exit 2; }
	@$(PLOT_PYTHON) -c 'import matplotlib, numpy' 2>/dev/null || { \
	  echo "plots need matplotlib and numpy for $(PLOT_PYTHON): sudo apt-get install -y python3-matplotlib python3-numpy"; exit 1; }
	$(PLOT_PYTHON) experiments/plots/plot_all.py $(RUN) $(if $(PLOTS_OUT),-o $(PLOTS_OUT))
