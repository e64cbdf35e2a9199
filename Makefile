# cryptshift — build and test entry points. Target names are a contract that
# other tooling relies on: test, test-unit, test-host, test-vm, test-boot, bench.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
export GOFLAGS ?= -buildvcs=false

.PHONY: all build deps test test-unit test-fuzz test-host test-vm test-boot bench run clean dist

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/cryptshift ./cmd/cryptshift

# Installs every Debian package the test tiers need (idempotent, needs root).
deps:
	scripts/deps.sh

# All tiers, in order; installs what it needs first.
test: deps
	scripts/test-all.sh

# Tier 1: pure unit, table and golden tests (no root, no devices).
test-unit:
	$(GO) test -count=1 ./...
	cd packaging && $(GO) test -count=1 ./...

# Tier 1b: every fuzz target for a bounded time.
test-fuzz:
	scripts/fuzz.sh

# Tier 2: real tools and daemons on the host (libvirtd, qemu, qemu-img, cryptsetup on files).
test-host: deps
	CRYPTSHIFT_TEST_HOST=1 $(GO) test -count=1 -run '^TestHost' -timeout 20m ./...
	cd packaging && CRYPTSHIFT_TEST_HOST=1 $(GO) test -count=1 -run '^TestHost' -timeout 20m ./...

# Tier 3: real dm-crypt and LVM on loop devices inside a throwaway TCG VM.
test-vm: deps
	scripts/test-vm.sh

# Tier 4: whole Debian systems booted through OVMF, GRUB and their own
# initramfs: the encrypted host move and every way to unlock its root.
test-boot: deps
	scripts/test-boot.sh

bench: deps
	scripts/bench.sh

run:
	$(GO) run ./cmd/cryptshift plan

# Release artifacts in dist/: static binaries (CGO_ENABLED=0) for amd64 and
# arm64, a Debian package per architecture (binary, man pages, bash/zsh/fish
# completions, playbooks) and SHA256SUMS (check with: cd dist && sha256sum -c SHA256SUMS).
DIST_ARCH ?= amd64,arm64
dist:
	cd packaging && $(GO) build -o ../bin/mkdist ./cmd/mkdist
	bin/mkdist -out dist -arch $(DIST_ARCH) -version $(VERSION) -commit $(COMMIT)

clean:
	rm -rf bin dist
