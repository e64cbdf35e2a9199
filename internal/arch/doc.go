// Package arch holds no code: its tests check the architecture of the
// repository (which group of packages may import which, where the command
// lines of cryptsetup and lvm are spelled, who reads journals). They run
// in tier 1 with `go test ./...`; docs/DEVELOPING.md explains the groups.
package arch
