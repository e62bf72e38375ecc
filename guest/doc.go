// Package guest builds the vmigrate test guest on the host and talks to it.
//
// The test guest is what the migrations move: a stock Debian kernel booted
// with an initramfs whose /init is the agent (guest/agent). The agent brings
// up virtio networking, runs a memory workload whose pages can be verified
// after the migration (guest/workload), and serves a small HTTP API
// (guest/agentapi) that the host reaches through Client.
//
// It exists so that every scenario runs against the same, reproducible guest
// without a distribution image or root: Build fetches the Debian kernel
// package with apt, keeps only vmlinuz and the virtio modules, adds the static
// busybox and the freshly compiled agent, and writes a deterministic gzip'd
// newc cpio (guest/cpio). Images are cached outside the source tree, keyed by
// a hash of their inputs, so a rebuild happens only when one of them changed:
//
//	Build(ctx, opts)  -> Image{Kernel, Initrd}   (apt-get download, dpkg-deb -x, go build)
//	Find(ctx, opts)   -> the cached Image, or an error wrapping ErrNotBuilt
//	KernelArgs(ip, prefix, workload) -> the -append string for QEMU
package guest
