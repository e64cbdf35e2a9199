// Package deps pins the project's required modules until code uses them.
package deps

import (
	_ "github.com/anatol/luks.go"
	_ "github.com/digitalocean/go-libvirt"
	_ "github.com/diskfs/go-diskfs"
	_ "github.com/moby/sys/mountinfo"
	_ "github.com/spf13/cobra"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
	_ "gopkg.in/yaml.v3"
	_ "libvirt.org/go/libvirtxml"
)
