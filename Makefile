# Shortcuts for contributors; docs/development.md says more. CI runs
# .ci/run, which `make ci` runs too.

FUZZTIME ?= 1m

# Where Go is installed on the CI machine, when it is not on PATH.
export PATH := $(PATH):/usr/local/go/bin

.PHONY: test race lint bench fuzz ci

# The tests, without the race detector (faster).
test:
	go vet ./...
	go test ./...

# The README's test command, as CI runs it.
race:
	go vet ./...
	go test -race ./...

# golangci-lint v2.15.0 with .golangci.yaml, installed when missing.
lint:
	bash .ci/lint

# The benchmarks behind the README's Performance figures, but for the
# million-row RSS benchmark, which docs/development.md shows how to run.
bench:
	go test -run '^$$' -bench . -benchmem -benchtime 5s ./api ./store
	go test -run '^$$' -bench . -benchtime 5000x ./dispatch
	go test -run '^$$' -bench BenchmarkCapture -benchtime 1x -count 3 ./cdc
	go test -run '^$$' -bench BenchmarkLatency -benchtime 5000x -count 3 ./cdc
	go test -run '^$$' -bench BenchmarkBurst -benchtime 1x -count 3 ./filewatch
	go test -run '^$$' -bench BenchmarkApplyFiles -benchtime 50x -count 3 ./store

# Each fuzz test for FUZZTIME, one at a time (go test fuzzes one target
# of one package per run).
fuzz:
	go test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./config
	go test -run '^$$' -fuzz '^FuzzQueueRequest$$' -fuzztime $(FUZZTIME) ./api
	go test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./auth
	go test -run '^$$' -fuzz '^FuzzAppendJSON$$' -fuzztime $(FUZZTIME) ./cdc

# What CI runs.
ci:
	bash .ci/run
