# Make targets for the real Apache Kafka broker of tools/kafka (no Docker).
# Include from the top-level Makefile:   include tools/kafka/kafka.mk
# Uses $(PY) (e.g. PY := .venv/bin/python) for the readiness check.
#
#   make kafka-fetch                 resolve the broker jars into .kafka-runtime/libs
#   make kafka-up [KAFKA_NODES=3]    start a broker (or 3-node cluster), print the bootstrap
#   make kafka-down                  stop it
#   make kafka-status                show the nodes
#
# KAFKA_DIR (default .kafka-runtime/cluster) and the KAFKACTL_* environment
# variables of tools/kafka/kafkactl (e.g. KAFKACTL_PORT_BASE) apply.

KAFKACTL := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))/kafkactl
PY ?= .venv/bin/python
KAFKA_NODES ?= 1
KAFKA_DIR ?= .kafka-runtime/cluster

.PHONY: kafka-fetch kafka-up kafka-down kafka-status

kafka-fetch:
	$(KAFKACTL) fetch

kafka-up: kafka-fetch
	KAFKACTL_PYTHON=$(PY) $(KAFKACTL) up --nodes $(KAFKA_NODES) --dir $(KAFKA_DIR)

kafka-down:
	$(KAFKACTL) down --dir $(KAFKA_DIR)

kafka-status:
	@$(KAFKACTL) status --dir $(KAFKA_DIR) || true
