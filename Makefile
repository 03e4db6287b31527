# churn-spark: `make demo` runs the whole weekly pipeline on a generated lake; `make test` runs the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_USERS ?= 6000
DEMO_WORK ?= work/demo
RUN_DATE ?= 2026-11-02
HORIZON_DAYS ?= 30
MATURED_SNAPSHOT = $(shell date -u -d "$(RUN_DATE) -$(HORIZON_DAYS) days" +%F)
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export SPARK_LOCAL_IP := 127.0.0.1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo sql-server test test-fast lint bench clean

setup:
	@bash scripts/setup_venv.sh
	@$(PY) -m churn_spark.class_archive

demo: setup
	@if [ -d $(DEMO_WORK)/lake/orders/_delta_log ]; then echo "demo lake exists in $(DEMO_WORK)/lake (make clean to regenerate)"; \
	else $(VENV)/bin/churn-spark generate-lake --config conf/local.yaml --set work_dir=$(DEMO_WORK) \
	  --users $(DEMO_USERS) --end-date $(RUN_DATE) --dirty; fi
	$(VENV)/bin/churn-spark weekly --config conf/local.yaml --set work_dir=$(DEMO_WORK) --run-date $(RUN_DATE) \
	  > $(DEMO_WORK)/weekly-summary.json
	@# history for BI and a first "did the warnings come true?": score the snapshot whose horizon ended on RUN_DATE
	$(VENV)/bin/churn-spark backfill --config conf/local.yaml --set work_dir=$(DEMO_WORK) \
	  --from $(MATURED_SNAPSHOT) --to $(MATURED_SNAPSHOT) > $(DEMO_WORK)/backfill-summary.json
	$(VENV)/bin/churn-spark monitor --config conf/local.yaml --set work_dir=$(DEMO_WORK) --run-date $(RUN_DATE) \
	  > $(DEMO_WORK)/monitor-summary.json
	@$(PY) scripts/demo_summary.py $(DEMO_WORK) $(RUN_DATE)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	$(PY) -m pytest tests -v -p no:cacheprovider --durations=15

test-fast: setup lint
	$(PY) -m pytest tests -q -p no:cacheprovider -m "not slow"

# JDBC/ODBC endpoint over the demo's tables (jdbc:hive2://127.0.0.1:$(SQL_PORT)/churn) until Ctrl-C
SQL_PORT ?= 10000
sql-server: setup
	$(VENV)/bin/churn-spark sql-server --config conf/local.yaml --set work_dir=$(DEMO_WORK) \
	  --set spark.conf.spark.driver.memory=1g --port $(SQL_PORT)

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf work build
