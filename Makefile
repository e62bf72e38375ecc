# vmigrate: make demo runs the main job, make test runs every test.
# Both install what they need (Debian packages, the guest image).

GO        ?= go
BIN       := bin/vmigrate
GOFLAGS   ?=
# Real-QEMU tests fail instead of skipping when QEMU or the guest is missing.
TESTENV   := VMIGRATE_REQUIRE_QEMU=1

.PHONY: all deps build guest test unit fuzz demo reproduce lint clean

all: build

# Debian packages, and QEMU 10.0 from bookworm-backports unpacked into the
# cache (the lab's TCG migrations need QEMU >= 9.0; see docs/qemu-versions.md).
deps:
	@./scripts/deps.sh
	@./scripts/qemu10.sh >/dev/null

build:
	$(GO) build $(GOFLAGS) -o $(BIN) .

guest: deps build
	@./$(BIN) guest build

# Everything: pure units with -race, transcript fakes, real QEMU end to end.
# The lab runs QEMU 10.0 under TCG (docs/qemu-versions.md); the second line
# runs the bad-input tests again on the system's QEMU 7.2. The load
# generator's timed tests (rates and latencies, against httperf and ab)
# wait for the third line: alone on the machine, without -race.
test: deps guest lint
	$(TESTENV) VMIGRATE_TIMED_TESTS=later $(GO) test -race -count=1 -timeout 40m ./...
	$(TESTENV) VMIGRATE_QEMU=qemu-system-x86_64 $(GO) test -race -count=1 -timeout 10m -run 'TestRunBadInputChangesNothing' ./command
	$(TESTENV) $(GO) test -count=1 -timeout 10m ./loadgen

# The fast tier only (no QEMU needed).
unit:
	$(GO) test -race -short -count=1 ./...

# Every fuzz target in turn, FUZZTIME each. A new input is minimized in at
# most 50 runs: Go's default, 60 s per new input, spent almost all the time
# minimizing the large inputs of the codec's targets (FuzzRoundTrip: about
# 500 inputs a minute instead of 100,000 with this bound).
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for t in $$(grep -h '^func Fuzz' $$pkg/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9]*\).*/\1/'); do \
	    echo "$$pkg $$t"; $(GO) test $$pkg -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 50x; \
	  done; \
	done

demo: deps guest
	./$(BIN) demo

# The published experiments (docs/reproductions.md), each report into
# $(REPRO_OUT)/NAME: the UFPE study, CloudNet's table, Lai et al.'s disks.
# About 75 minutes on a 2-core machine; not part of make test.
REPRO_OUT ?= results
reproduce: deps guest
	./$(BIN) scenario ufpe --out $(REPRO_OUT)/ufpe
	./$(BIN) scenario cloudnet --out $(REPRO_OUT)/cloudnet
	./$(BIN) scenario lai --out $(REPRO_OUT)/lai

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
