// Package blockmirror will move a VM's local disks: drive-mirror from the
// source QEMU to an NBD export on the destination, carried by vmigrate's
// tunnel, skipping blocks the destination already holds in neighbouring
// images (an index of block fingerprints). Nothing is implemented yet; the
// lab's guest runs from an initramfs and has no disk.
package blockmirror
